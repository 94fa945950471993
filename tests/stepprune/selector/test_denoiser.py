"""The diagonal-masked denoiser, Eq. (14): a per-token map that starts as the identity."""

import torch
import torch.nn.functional as F

from stepprune.selector.denoiser import DiagonalDenoiser


def _randomised(width=8, group=1, seed=0):
    torch.manual_seed(seed)
    den = DiagonalDenoiser(width, group)
    for p in den.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return den


def test_starts_as_the_identity():
    den = DiagonalDenoiser(8, 4)
    x = torch.randn(2, 5, 32)
    assert torch.equal(den(x), x)


def test_perturbing_token_j_changes_no_other_token():
    for group in (1, 4):
        den = _randomised(8, group)
        x = torch.randn(2, 6, 8 * group)
        y = den(x)
        x2 = x.clone()
        x2[1, 3] += 1.0
        y2 = den(x2)
        changed = (y2 != y).any(dim=-1)
        assert changed[1, 3] and int(changed.sum()) == 1


def test_qwen_group_denoises_each_patch_feature_separately():
    den = _randomised(8, 4)
    x = torch.randn(1, 3, 32)
    y = den(x)
    x2 = x.clone()
    x2[0, 1, 8:16] += 1.0  # the second patch feature of token 1
    diff = (den(x2) - y).abs().reshape(1, 3, 4, 8).sum(-1) > 0
    assert diff[0, 1].tolist() == [False, True, False, False] and int(diff.sum()) == 1


def test_equals_a_vit_block_under_the_identity_attention_mask():
    """The per-token map is exactly a pre-norm ViT block with mask log I_N, whatever the (unused) Q/K weights."""
    width, heads, n = 8, 2, 5
    den = _randomised(width)
    x = torch.randn(2, n, width)
    wq, wk = torch.randn(width, width), torch.randn(width, width)
    h = den.ln_1(x)
    split = lambda t: t.view(2, n, heads, width // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(h @ wq.T), split(h @ wk.T), split(den.value(h))
    mask = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
    att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(2, n, width)
    r = x + den.out(att)
    reference = r + den.fc2(den.act(den.fc1(den.ln_2(r))))
    torch.testing.assert_close(den(x), reference)
