"""PruMerge: the IQR count, the score, the neighbour merge, the extra token, the budget modes, the Qwen port."""

import pytest
import torch
import torch.nn.functional as F

import stepprune
from stepprune.methods.prumerge import iqr_outlier_count, merge_neighbours
from tests.stepprune.methods.prellm_helpers import (
    assert_generation_equals_vanilla,
    context,
    numpy_iqr_ratio,
    official_clip_qk,
)


def _official_scores(llava, ctx):
    """CLS attention and keys exactly as the official code computes them (hooks, one head of full width)."""
    q, k, feats = official_clip_qk(llava, ctx.prompt.pixel_inputs["pixel_values"])
    width = feats.shape[-1]
    attn = F.softmax((q.float() @ k.float().transpose(-2, -1)) * width ** -0.5, dim=-1)
    return attn[:, 0, 1:], k[:, 1:], feats


def test_iqr_count_on_constructed_scores():
    scores = torch.cat([torch.linspace(0.0, 1.0, 97), torch.tensor([5.0, 7.0, 9.0])])
    assert iqr_outlier_count(scores) == 3
    assert iqr_outlier_count(torch.ones(50)) == 0  # IQR 0 and nothing strictly above Q3
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(576, generator=g).exp()  # heavy right tail
        assert iqr_outlier_count(x) == round(numpy_iqr_ratio(x) * 576)


def test_adaptive_count_follows_the_iqr_rule_on_the_real_attention(llava):
    ctx = context(llava, n=2)
    cls_attn, _, _ = _official_scores(llava, ctx)
    out = stepprune.build_method("prumerge").select(ctx)
    for b in range(2):
        k = int(576 * numpy_iqr_ratio(cls_attn[b]))  # per image, as the official code does with batch 1
        assert k > 0
        assert int(out.count[b]) == k + 1  # + the extra token
        kept = out.source_index[b, :k]
        # Official order: the top-k by attention, descending.
        assert kept.tolist() == cls_attn[b].argsort(descending=True)[:k].tolist()


@pytest.mark.parametrize("b", [0, 1])
def test_merge_adds_exactly_the_weighted_neighbours_and_extra_sums_the_pruned(llava, b):
    ctx = context(llava, n=2)
    cls_attn, keys, feats = _official_scores(llava, ctx)
    out = stepprune.build_method("prumerge").select(ctx)
    count = int(out.count[b])
    kept = out.source_index[b, : count - 1]
    a, x = cls_attn[b], feats[b].float()
    # One kept token by hand: its 32 most cosine-similar *other* tokens by layer-23 keys, raw-attention weighted.
    i = int(kept[1])
    kn = F.normalize(keys[b].float(), dim=-1)
    others = torch.tensor([j for j in range(576) if j != i])
    nbr = others[(kn[others] @ kn[i]).topk(32).indices]
    by_hand = x[i] + sum(a[j] * x[j] for j in nbr.tolist())
    torch.testing.assert_close(out.embeds[b, 1], llava.project(by_hand[None, None])[0, 0], rtol=1e-5, atol=1e-5)
    pruned = [j for j in range(576) if j not in set(kept.tolist())]
    extra = sum(a[j] * x[j] for j in pruned)
    torch.testing.assert_close(out.embeds[b, count - 1], llava.project(extra[None, None])[0, 0],
                               rtol=1e-5, atol=1e-5)


def test_merge_is_one_matmul_equal_to_the_per_token_loop():
    g = torch.Generator().manual_seed(1)
    x, keys, w = torch.randn(40, 6, generator=g), torch.randn(40, 5, generator=g), torch.rand(40, generator=g)
    keep = torch.tensor([7, 3, 30])
    got = merge_neighbours(x, keys, w, keep, neighbours=4)
    kn = F.normalize(keys, dim=-1)
    for r, i in enumerate(keep.tolist()):
        sims = kn @ kn[i]
        sims[i] = -float("inf")
        nbr = sims.topk(4).indices
        torch.testing.assert_close(got[r], x[i] + (w[nbr, None] * x[nbr]).sum(0))
    assert torch.equal(merge_neighbours(x, keys, w, keep, neighbours=0), x[keep])


def test_fixed_budget_is_exact_with_the_extra_token_by_default(llava):
    ctx = context(llava, n=1)
    cls_attn, _, _ = _official_scores(llava, ctx)
    order = cls_attn[0].argsort(descending=True)
    exact = stepprune.build_method("prumerge", budget=64).select(ctx)
    assert exact.count.tolist() == [64]
    assert exact.source_index[0, :63].tolist() == order[:63].tolist()
    loose = stepprune.build_method("prumerge", budget=64, exact_budget=False).select(ctx)
    assert loose.count.tolist() == [65] and loose.source_index[0, :64].tolist() == order[:64].tolist()
    no_extra = stepprune.build_method("prumerge", budget=64, extra_token=False).select(ctx)
    assert no_extra.count.tolist() == [64] and no_extra.source_index[0].tolist() == order[:64].tolist()
    torch.testing.assert_close(no_extra.embeds[0, :63], exact.embeds[0, :63])


def test_qwen_port_merges_in_llm_space_without_extra_token_in_spatial_order(qwen):
    ctx = context(qwen, n=1)
    method = stepprune.build_method("prumerge", ratio=0.3)
    out = method.select(ctx)
    assert method.position_mode_for(qwen.family) == "original"
    k = int(0.3 * 144)
    assert out.count.tolist() == [k]
    # Attention received per merged token (mean over heads and queries, mean over its 4 sub-patches).
    a = ctx.vision.attention(-1)[0].mean(0).mean(0).view(144, 4).mean(-1)
    kept = out.source_index[0]
    assert kept.tolist() == sorted(a.topk(k).indices.tolist())
    # One token by hand, on the projected features with the sub-patch-averaged full-width post-RoPE keys.
    _, keys, _ = ctx.vision.qk(-1)
    keys = keys[0].transpose(0, 1).reshape(576, -1).view(144, 4, -1).mean(1)
    x, kn = ctx.projected()[0].float(), F.normalize(keys.float(), dim=-1)
    i = int(kept[5])
    sims = kn @ kn[i]
    sims[i] = -float("inf")
    nbr = sims.topk(32).indices
    torch.testing.assert_close(out.embeds[0, 5].float(), x[i] + (a[nbr, None] * x[nbr]).sum(0),
                               rtol=1e-5, atol=1e-5)


def test_keep_all_with_the_merge_off_reproduces_vanilla(adapter):
    n = 576 if adapter.family == "llava" else 144
    cfg = {"budget": n, "neighbours": 0, "extra_token": False, "order": "spatial"}
    assert_generation_equals_vanilla(adapter, stepprune.build_method("prumerge", cfg))


def test_keep_all_with_the_merge_on_is_not_an_identity(llava):
    ctx = context(llava, n=1)
    out = stepprune.build_method("prumerge", budget=576, extra_token=False, order="spatial").select(ctx)
    assert out.source_index[0].tolist() == list(range(576))
    assert not torch.allclose(out.embeds, ctx.projected(), rtol=0, atol=1e-5)


def test_config_is_validated():
    with pytest.raises(ValueError, match="neighbours must be an integer >= 0"):
        stepprune.build_method("prumerge", neighbours=-1)
    with pytest.raises(ValueError, match="order must be"):
        stepprune.build_method("prumerge", order="random")
    with pytest.raises(ValueError, match="no default for backbone family 'other'"):
        stepprune.build_method("prumerge").position_mode_for("other")
