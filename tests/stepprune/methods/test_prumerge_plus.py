"""PruMerge+: the uniform supplement (adaptive and fixed-budget port rules), order, no duplicates."""

import torch
import torch.nn.functional as F

import stepprune
from stepprune.methods.prumerge_plus import uniform_supplement
from tests.stepprune.methods.prellm_helpers import (
    assert_generation_equals_vanilla,
    context,
    numpy_iqr_ratio,
    official_clip_qk,
)


def _official_cls_attention(llava, ctx):
    q, k, feats = official_clip_qk(llava, ctx.prompt.pixel_inputs["pixel_values"])
    return F.softmax((q.float() @ k.float().transpose(-2, -1)) * feats.shape[-1] ** -0.5, dim=-1)[:, 0, 1:]


def test_uniform_supplement_skips_kept_indices_in_grid_order():
    top = torch.tensor([40, 0, 17, 20])
    assert uniform_supplement(top, 50, 10, 49).tolist() == [10, 30]
    assert uniform_supplement(top, 50, 10, 50).tolist() == [10, 30]


def test_adaptive_supplement_is_the_official_uniform_stride_without_duplicates(llava):
    ctx = context(llava, n=2)
    cls_attn = _official_cls_attention(llava, ctx)
    out = stepprune.build_method("prumerge_plus").select(ctx)
    for b in range(2):
        ratio = numpy_iqr_ratio(cls_attn[b])
        k = int(576 * ratio)
        top = cls_attn[b].argsort(descending=True)[:k].tolist()
        step = int(int(1 / ratio) / 3)
        assert step > 1
        supplement = [i for i in range(0, 575, step) if i not in top]  # the official torch.arange(0, 575, step)
        kept = out.source_index[b, : int(out.count[b])].tolist()
        assert kept[:-1] == top + supplement  # attention-descending outliers, then the grid; extra token last
        assert len(set(kept[:-1])) == len(kept) - 1


def test_fixed_budget_follows_the_visionselector_port(llava):
    ctx = context(llava, n=1)
    cls_attn = _official_cls_attention(llava, ctx)[0]
    out = stepprune.build_method("prumerge_plus", budget=64).select(ctx)
    assert out.count.tolist() == [64]
    k_iqr = max(1, int(576 * numpy_iqr_ratio(cls_attn)))
    top = cls_attn.argsort(descending=True)[:k_iqr].tolist()
    want = 63  # exact budget: 63 selected + the extra token
    fill = [i for i in range(0, 576, 576 // want) if i not in top][: want - k_iqr]
    kept = out.source_index[0, :want].tolist()
    assert kept == top + fill and len(set(kept)) == want


def test_qwen_fixed_ratio_keeps_the_port_set_in_spatial_order(qwen):
    ctx = context(qwen, n=1)
    out = stepprune.build_method("prumerge_plus", ratio=0.3).select(ctx)
    want = int(0.3 * 144)
    assert out.count.tolist() == [want]  # no extra token on Qwen by default
    a = ctx.vision.attention(-1)[0].mean(0).mean(0).view(144, 4).mean(-1)
    k_iqr = max(1, int(144 * numpy_iqr_ratio(a)))
    top = a.argsort(descending=True)[:k_iqr].tolist()
    fill = [i for i in range(0, 144, 144 // want) if i not in top][: want - k_iqr]
    assert out.source_index[0].tolist() == sorted(top + fill)


def test_keep_all_with_the_merge_off_reproduces_vanilla(adapter):
    n = 576 if adapter.family == "llava" else 144
    cfg = {"budget": n, "neighbours": 0, "extra_token": False, "order": "spatial"}
    assert_generation_equals_vanilla(adapter, stepprune.build_method("prumerge_plus", cfg))
