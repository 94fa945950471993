"""The VP noise gate, Eq. (13), and its running-RMS noise scale."""

import torch

import stepprune
from stepprune.selector.gate import NoiseScale, vp_noise_gate


def test_public_name():
    assert stepprune.vp_noise_gate is vp_noise_gate


def test_g_one_is_the_identity_and_g_zero_is_the_noise():
    x, noise = torch.randn(2, 7, 5), torch.randn(2, 7, 5)
    assert torch.equal(vp_noise_gate(x, torch.ones(2, 7), noise), x)
    assert torch.equal(vp_noise_gate(x, torch.zeros(2, 7), noise), noise)
    g = torch.rand(2, 7)
    expected = g.sqrt()[..., None] * x + (1 - g).sqrt()[..., None] * noise
    torch.testing.assert_close(vp_noise_gate(x, g, noise), expected)


def test_gradients_stay_finite_at_the_ends():
    x, noise = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    g = torch.tensor([[0.0, 1.0, 0.5, 1e-9]], requires_grad=True)
    vp_noise_gate(x, g, noise).sum().backward()
    assert torch.isfinite(g.grad).all()
    # without the gradient clamp the ends are singular
    g2 = g.detach().clone().requires_grad_(True)
    vp_noise_gate(x, g2, noise, clamp=0.0).sum().backward()
    assert not torch.isfinite(g2.grad).all()


def test_second_moment_is_preserved_with_the_running_rms_scale():
    torch.manual_seed(0)
    x = 3.0 * torch.randn(8, 200, 64) + 0.5
    mask = torch.ones(8, 200, dtype=torch.bool)
    scale = NoiseScale("global")
    scale.update(x, mask)
    g = torch.rand(8, 200)
    out = vp_noise_gate(x, g, scale.sample(x))
    before, after = x.pow(2).sum(-1).mean(), out.pow(2).sum(-1).mean()
    assert abs(float(after / before) - 1.0) < 0.01
    # per-token scale preserves each token's own norm in expectation
    tok = NoiseScale("token")
    out = vp_noise_gate(x, torch.zeros(8, 200), tok.sample(x))
    assert abs(float(out.pow(2).mean() / x.pow(2).mean()) - 1.0) < 0.01


def test_running_mean_square_is_an_ema_over_valid_tokens():
    scale = NoiseScale("global", momentum=0.5)
    mask = torch.tensor([[True, True, False]])
    scale.update(torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]]), mask)
    torch.testing.assert_close(scale.mean_square, torch.tensor(5.0))  # first batch initialises: (1 + 9) / 2
    scale.update(torch.full((1, 3, 2), 1.0), mask)
    torch.testing.assert_close(scale.mean_square, torch.tensor(3.0))
    assert scale.std(torch.zeros(1, 3, 2)).shape == ()
