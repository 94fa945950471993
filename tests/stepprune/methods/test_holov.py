"""HoloV: the range rule, the range score, the leftover allocation, exactly K tokens in range order, padding."""

import pytest
import torch

import stepprune
from stepprune.methods.holov import allocate, num_ranges, range_scores, range_sizes
from tests.stepprune.methods.prellm_helpers import assert_generation_equals_vanilla, context


def test_ranges_follow_p():
    assert [num_ranges(576, k) for k in (64, 128, 192)] == [16, 8, 5]
    assert num_ranges(576, 576) == 1
    assert range_sizes(10, 3).tolist() == [4, 3, 3]  # the first N % P ranges are one longer
    assert range_sizes(3, 5).tolist() == [1, 1, 1]  # empty ranges are dropped


def test_leftover_goes_to_the_largest_weights():
    # w = s / (sum + 1e-6) sits just below 0.4 / 0.3 / 0.2 / 0.1: floor(7 w) = 2, 2, 1, 0 and 2 are left over.
    assert allocate(torch.tensor([4.0, 3.0, 2.0, 1.0]), 7).tolist() == [3, 3, 1, 0]
    assert allocate(torch.tensor([1.0, 2.0, 3.0]), 10).tolist() == [1, 4, 5]
    assert int(allocate(torch.rand(16, generator=torch.Generator().manual_seed(0)), 64).sum()) == 64


def _official_range_score(f, a, beta=0.09):
    """The official per-range loop body (llava/model/utils.py), for one range."""
    n = f.shape[0]
    fn = f / (f.norm(dim=1, keepdim=True) + 1e-6)
    s = (fn @ fn.T) * (1 - torch.eye(n))
    mean = s.sum(1) / (n - 1)
    var = ((s - mean[:, None]) ** 2).sum(1) / (n - 1)
    a_scaled = a * 1e3
    var_scaled = var * (a_scaled.abs().mean() / (var.abs().mean() + 1e-6))
    return (a_scaled + beta * var_scaled).mean()


def test_range_scores_match_the_official_loop():
    g = torch.Generator().manual_seed(0)
    f, a = torch.randn(23, 8, generator=g), torch.rand(23, generator=g) / 100
    sizes = range_sizes(23, 4)  # 6, 6, 6, 5
    ours = range_scores(f, a, sizes)
    start = 0
    for p, n in enumerate(sizes.tolist()):
        torch.testing.assert_close(ours[p], _official_range_score(f[start:start + n], a[start:start + n]))
        start += n
    ones = range_sizes(3, 3)  # one-token ranges score their raw attention
    torch.testing.assert_close(range_scores(f[:3], a[:3], ones), a[:3])


@pytest.mark.parametrize("k", [64, 192])
def test_selection_is_k_tokens_in_range_order_top_attention_inside(adapter, k):
    n = 576 if adapter.family == "llava" else 144
    k = min(k, n // 2)
    ctx = context(adapter, n=1)
    out = stepprune.build_method("holov", budget=k).select(ctx)
    assert out.count.tolist() == [k]
    if adapter.family == "llava":
        attn = ctx.vision.attention(-2)[0, :, 0, 1:].mean(0)
    else:
        attn = ctx.vision.attention(-1)[0].mean(0).mean(0).view(n, 4).mean(-1)
    sizes = range_sizes(n, num_ranges(n, k))
    alloc = allocate(range_scores(ctx.projected()[0], attn, sizes), k)
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    expected = []
    for p in range(sizes.numel()):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if alloc[p] >= hi - lo:
            expected += list(range(lo, hi))
        else:
            expected += (lo + attn[lo:hi].argsort(descending=True)[: int(alloc[p])]).tolist()
    got = out.source_index[0].tolist()
    assert got[: len(expected)] == expected
    assert len(expected) == k  # no padding needed here
    torch.testing.assert_close(out.embeds[0], ctx.projected()[0, got])


def test_zero_padding_to_exactly_k(llava):
    # Two ranges of 288 and K = 576: the heavier range is allotted more than it has, so zero rows fill up to K.
    ctx = context(llava, n=1)
    out = stepprune.build_method("holov", budget=576, ranges=2).select(ctx)
    assert out.count.tolist() == [576]
    zero = (out.embeds[0] == 0).all(dim=-1)
    pads = int(zero.sum())
    assert pads > 0 and zero[-pads:].all() and not zero[:-pads].any()
    assert out.source_index[0, -pads:].tolist() == [575] * pads
    assert len(set(out.source_index[0, :-pads].tolist())) == 576 - pads


def test_keep_all_reproduces_vanilla(adapter):
    cfg = {"budget": 576} if adapter.family == "llava" else {"ratio": 1.0}
    assert_generation_equals_vanilla(adapter, stepprune.build_method("holov", cfg))


def test_positions_default_per_backbone():
    m = stepprune.build_method("holov", budget=64)
    assert (m.position_mode_for("llava"), m.position_mode_for("qwen2_5_vl")) == ("contiguous", "original")
    assert stepprune.build_method("holov", budget=64, positions="original").position_mode_for("llava") == "original"
