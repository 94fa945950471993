"""The cross-modal input encoder, Eq. (3): bidirectional/causal attention, padding, the text gate, projections."""

import torch

from stepprune.selector.encoder import CrossModalEncoder
from stepprune.selector.layers import init_weights


def _enc(**kw):
    torch.manual_seed(0)
    args = dict(d_tok=16, d_llm=12, d=16, heads=4, mlp_ratio=2, layers=2)
    args.update(kw)
    return CrossModalEncoder(**args)


def _inputs(B=2, N=6, L=4):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, N, 16, generator=g), torch.ones(B, N, dtype=torch.bool),
            torch.randn(B, L, 12, generator=g), torch.ones(B, L, dtype=torch.bool))


def test_output_is_the_image_positions_at_unit_scale():
    enc = _enc()
    x, xm, t, tm = _inputs()
    h = enc(x, xm, t, tm, 1.0)
    assert h.shape == (2, 6, 16)
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)  # after LN_f


def test_bidirectional_vs_causal():
    x, xm, t, tm = _inputs()
    x2 = x.clone()
    x2[:, 4] += torch.randn(16)  # (a constant shift would vanish in the LayerNorm)
    bi, causal = _enc(), _enc(causal=True)
    assert not torch.allclose(bi(x, xm, t, tm, 1.0)[:, :4], bi(x2, xm, t, tm, 1.0)[:, :4])
    torch.testing.assert_close(causal(x, xm, t, tm, 1.0)[:, :4], causal(x2, xm, t, tm, 1.0)[:, :4])
    # causal: image tokens never see the text that follows them
    t2 = t + torch.randn_like(t)
    torch.testing.assert_close(causal(x, xm, t, tm, 1.0), causal(x, xm, t2, tm, 1.0))


def test_text_padding_and_image_padding_are_ignored():
    enc = _enc()
    x, xm, t, tm = _inputs()
    base = enc(x, xm, t, tm, 1.0)
    t_pad = torch.cat([t, torch.randn(2, 3, 12)], dim=1)
    tm_pad = torch.cat([tm, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(enc(x, xm, t_pad, tm_pad, 1.0), base)
    x_pad = torch.cat([x, torch.randn(2, 2, 16)], dim=1)
    xm_pad = torch.cat([xm, torch.zeros(2, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(enc(x_pad, xm_pad, t, tm, 1.0)[:, :6], base)


def test_text_gate_alpha_scales_the_question():
    enc = _enc()
    x, xm, t, tm = _inputs()
    other = torch.randn_like(t)
    # alpha = 0: the question's content has no effect
    torch.testing.assert_close(enc(x, xm, t, tm, 0.0), enc(x, xm, other, tm, 0.0))
    assert not torch.allclose(enc(x, xm, t, tm, 1.0), enc(x, xm, other, tm, 1.0))


def test_input_projection_only_when_widths_differ():
    assert isinstance(_enc().input_proj, torch.nn.Identity)
    enc = _enc(d_tok=64, project_input=True)  # e.g. Qwen: 4 concatenated patch features
    assert isinstance(enc.input_proj, torch.nn.Linear) and enc.input_proj.in_features == 64
    assert enc(torch.randn(1, 3, 64), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 2, 12),
               torch.ones(1, 2, dtype=torch.bool), 1.0).shape == (1, 3, 16)


def test_input_norm_makes_the_memory_independent_of_each_visual_token_s_scale():
    x, xm, t, tm = _inputs()
    xm[1, -2:] = False
    x[1, -2:] = 0.0  # padded rows, as the adapters pad them
    scale = torch.tensor([0.5, 4.0, 1.0, 10.0, 2.0, 3.0])[None, :, None]  # a different scale per token
    enc = _enc(input_norm=True)
    torch.testing.assert_close(enc(x * scale, xm, t, tm, 1.0), enc(x, xm, t, tm, 1.0), atol=1e-4, rtol=1e-4)
    plain = _enc()
    assert not torch.allclose(plain(x * scale, xm, t, tm, 1.0), plain(x, xm, t, tm, 1.0), atol=1e-3)
    # At the selector's init (trunc-normal 0.02), the question moves the memory of large raw features far more
    # with it than without it (the reason it exists).
    x, xm, t, tm = _inputs()
    big = x * 10
    init_weights(enc, 0.02)
    init_weights(plain, 0.02)

    def moved(e):
        return (e(big, xm, t, tm, 1.0) - e(big, xm, t, tm, 0.0)).norm()

    assert moved(enc) > 5 * moved(plain)
