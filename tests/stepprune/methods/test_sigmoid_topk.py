"""The shared differentiable top-k: sums, exact bracket at any scale, weights, implicit gradients, hard limit."""

import pytest
import torch

from stepprune.methods.sigmoid_topk import sigmoid_topk, sigmoid_topk_shift
from stepprune.selector.soft_topk import soft_topk


def _logits(B=3, n=50, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3])
def test_rows_sum_to_k_for_any_logit_scale(scale):
    # VisionSelector's raw scores start ~1e-8 and grow without bound: the bracket must not assume a range.
    z = _logits(scale=scale)
    k = torch.tensor([1.5, 10.0, 40.0], dtype=torch.float64)
    y = sigmoid_topk(z, k)
    torch.testing.assert_close(y.sum(dim=1), k, rtol=0, atol=1e-9)
    assert bool(((y >= 0) & (y <= 1)).all())


def test_mask_and_real_weights():
    z = _logits(B=2, n=30, seed=1)
    w = torch.rand(2, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w[1, 20:] = 0.0
    k = torch.tensor([5.0, 3.5], dtype=torch.float64)
    y = sigmoid_topk(z, k, w)
    torch.testing.assert_close((w * y).sum(dim=1), k, rtol=0, atol=1e-9)
    assert bool((y[1, 20:] == 0).all())
    # A bool mask equals unit weights on the valid entries, and padding does not change the valid ones.
    mask = w > 0
    torch.testing.assert_close(sigmoid_topk(z[1:, :20], 3.5), sigmoid_topk(z, k, mask)[1:, :20])


def test_the_shift_is_the_root_and_the_newton_step_keeps_it():
    z = _logits(B=2, n=100, seed=3)
    t = sigmoid_topk_shift(z, 20.0)
    torch.testing.assert_close(torch.sigmoid(z + t[:, None]).sum(dim=1), torch.full((2,), 20.0,
                               dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(sigmoid_topk(z, 20.0), torch.sigmoid(z + t[:, None]), rtol=0, atol=1e-12)


def test_gradients_match_finite_differences_for_logits_weights_and_budget():
    z = _logits(B=2, n=8, seed=4).requires_grad_(True)
    w = (0.2 + 0.8 * torch.rand(2, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    w.requires_grad_(True)
    k = torch.tensor([2.3, 1.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: sigmoid_topk(a, c, b), (z, w, k), eps=1e-6, atol=1e-6)


def test_jacobian_is_the_implicit_function_formula():
    z = _logits(B=1, n=10, seed=6)
    jac = torch.autograd.functional.jacobian(lambda v: sigmoid_topk(v, 3.0), z)[0, :, 0, :]
    y = sigmoid_topk(z, 3.0)[0]
    sp = y * (1 - y)
    torch.testing.assert_close(jac, torch.diag(sp) - torch.outer(sp, sp) / sp.sum(), rtol=1e-8, atol=1e-12)
    # d y / d k = sigma' / sum sigma' (the shift moves every entry; the sum grows by exactly dk)
    dk = torch.autograd.functional.jacobian(lambda c: sigmoid_topk(z, c), torch.tensor(3.0, dtype=torch.float64))
    torch.testing.assert_close(dk[0], sp / sp.sum(), rtol=1e-8, atol=1e-12)


def test_sharp_logits_give_the_hard_top_k():
    z = torch.randperm(60, generator=torch.Generator().manual_seed(7)).double()[None] * 50.0
    for k in (1, 13, 59):
        hard = torch.zeros_like(z)
        hard[0, z[0].topk(k).indices] = 1.0
        assert (sigmoid_topk(z, float(k)) - hard).abs().max() < 1e-6


def test_stepprune_soft_topk_is_this_solver_reparametrised():
    x = torch.rand(2, 40, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(soft_topk(x, 7.5, 0.1), sigmoid_topk((2 * x - 1) / 0.1, 7.5), rtol=0, atol=1e-12)
