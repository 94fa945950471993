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


def _manual_split(q, k, v, n_img, text_mask):
    """Reference: softmax over the image keys plus softmax over the valid text keys, per query. (B, H, L, d_h)."""
    scale = q.shape[-1] ** -0.5
    logits = q @ k.transpose(-1, -2) * scale
    img = torch.softmax(logits[..., :n_img], -1) @ v[:, :, :n_img]
    txt_logits = logits[..., n_img:].masked_fill(~text_mask[:, None, None, :], float("-inf"))
    w = torch.nan_to_num(torch.softmax(txt_logits, -1), nan=0.0)  # a sample without text takes nothing from it
    return img + w @ v[:, :, n_img:]


def test_split_attention_is_two_softmaxes_added():
    from stepprune.selector.encoder import split_attention
    g = torch.Generator().manual_seed(3)
    B, H, N, L, dh = 2, 2, 5, 3, 4
    q, k, v = (torch.randn(B, H, N + L, dh, generator=g) for _ in range(3))
    tm = torch.tensor([[True, True, False], [False, False, False]])  # the second sample has no question
    allowed = torch.cat([torch.ones(B, N, dtype=torch.bool), tm], 1)[:, None, None, :]
    out = split_attention(q, k, v, allowed, N)
    torch.testing.assert_close(out, _manual_split(q, k, v, N, tm))
    # and it is not the joint softmax
    joint = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert not torch.allclose(out[0], joint[0], atol=1e-3)
    assert torch.isfinite(out).all()


def test_split_text_attention_gives_the_question_its_own_softmax():
    # One question token among many image tokens: under the joint softmax its share of each patch's attention is
    # about 1 / (N + 1), under the split one it is a whole softmax, so the question moves the memory far more.
    g = torch.Generator().manual_seed(4)
    x, xm = torch.randn(1, 200, 16, generator=g), torch.ones(1, 200, dtype=torch.bool)
    t, tm = torch.randn(1, 1, 12, generator=g), torch.ones(1, 1, dtype=torch.bool)
    joint, split = _enc(), _enc(text_attention="split")
    split.load_state_dict(joint.state_dict())  # same weights: only the softmax differs

    def moved(e):
        return (e(x, xm, t, tm, 1.0) - e(x, xm, torch.randn(1, 1, 12, generator=g), tm, 1.0)).norm()

    assert moved(split) > 10 * moved(joint)
    # padding and the causal mask still hold under the split softmax
    base = split(x, xm, t, tm, 1.0)
    t_pad, tm_pad = torch.cat([t, torch.randn(1, 2, 12)], 1), torch.cat([tm, torch.zeros(1, 2, dtype=torch.bool)], 1)
    torch.testing.assert_close(split(x, xm, t_pad, tm_pad, 1.0), base)
    causal = _enc(text_attention="split", causal=True)
    torch.testing.assert_close(causal(x, xm, t, tm, 1.0), causal(x, xm, t + 1.0, tm, 1.0))


def test_split_text_attention_trains_without_nans_when_a_part_has_no_keys():
    # causal: no image query sees a text key; and the second sample has no question token at all (a guard for
    # SDPA backends that return NaN for a fully masked row; this CPU build returns 0)
    x, xm, t, tm = _inputs()
    tm[1] = False
    for enc in (_enc(text_attention="split", causal=True), _enc(text_attention="split")):
        enc(x, xm, t, tm, 1.0).square().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_text_attention_must_be_joint_or_split():
    import pytest
    with pytest.raises(ValueError, match="text_attention"):
        _enc(text_attention="cross")
