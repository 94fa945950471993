"""What every in-LLM baseline shares: layer mapping, top-k masks, keep-all = vanilla, batch = one by one,
budgets on both backbones, and the reported tokens per layer."""

import pytest
import torch

import stepprune
from stepprune.methods.in_llm import map_layers, merge_stages, topk_keep
from tests.conftest import PROMPTS, make_images
from tests.stepprune.methods.inllm_reference import context

IN_LLM = ["fastv", "sparsevlm", "pdrop", "dart"]


def test_the_four_baselines_are_registered_as_training_free_in_llm_methods():
    for name in IN_LLM:
        cls = stepprune.method_class(name)
        assert cls.hook_point == "in_llm" and cls.training_free and cls.uses_text
    assert stepprune.build_method("pdrop").config.positions == "contiguous"
    assert {stepprune.build_method(n).config.positions for n in ("fastv", "sparsevlm", "dart")} == {"original"}


def test_layer_mapping_rules():
    kw = dict(lowest=1, highest=3, reference_depth=32, owner="m", field="layers")
    assert map_layers([2], 4, mode="fit", **kw) == [2]  # fits: unchanged
    assert map_layers([8, 16, 24], 4, mode="fit", **kw) == [1, 2, 3]  # does not fit: proportional
    assert map_layers([2, 8, 16, 24], 4, mode="proportional", **kw) == [1, 1, 2, 3]  # clamped to >= 1
    assert map_layers([2, 6, 15], 4, mode="proportional", **{**kw, "lowest": 0, "highest": 2}) == [0, 1, 2]
    assert map_layers([2, 6, 15], 28, mode="fit", **{**kw, "highest": 27}) == [2, 6, 15]  # Qwen2.5-VL-7B
    with pytest.raises(ValueError, match=r"m: layers=\[8\] do not fit a 4-layer LLM \(valid: 1\.\.3\)"):
        map_layers([8], 4, mode="strict", **kw)
    with pytest.raises(ValueError, match="too shallow"):
        map_layers([1], 1, mode="fit", **{**kw, "highest": 0})
    assert merge_stages([1, 1, 2, 3]) == {1: 1, 2: 2, 3: 3}  # the deeper stage wins a shared layer
    with pytest.raises(ValueError, match="layer_mapping must be"):
        stepprune.build_method("fastv", layer_mapping="nearest")


def test_topk_keep_is_per_sample_and_keeps_slot_order():
    scores = torch.tensor([[5.0, 1, 4, 3, 9], [1.0, 2, 3, 4, 5]])
    cand = torch.tensor([[False, True, True, True, True], [True, True, True, False, False]])
    keep = topk_keep(scores, cand, [2, 5])
    assert keep.tolist() == [[False, False, True, False, True], [True, True, True, False, False]]


def _keep_all(name, adapter):
    n = 576 if adapter.family == "llava" else 144
    return {
        "fastv": {"ratio": 1.0},
        "dart": {"ratio": 1.0},  # T = N // 8 per pivot: every candidate is taken
        "sparsevlm": {"schedule": (576, 576, 576)},  # every stage count >= the current count
        # lam = 1 keeps every token; on Qwen2.5-VL contiguous re-indexing would replace the M-RoPE ids.
        "pdrop": {"lam": 1.0, **({} if adapter.family == "llava" else {"positions": "original"})},
    }[name], n


@pytest.mark.parametrize("name", IN_LLM)
def test_keep_all_setting_reproduces_vanilla(adapter, name):
    ctx = context(adapter, n=2, seed=11)
    vanilla = stepprune.PrunedVLM(adapter, stepprune.build_method("vanilla")).generate(ctx.prompt, 4)
    cfg, n = _keep_all(name, adapter)
    method = stepprune.build_method(name, cfg)
    assert method.llm_hooks(ctx)  # the hooks really run
    out = stepprune.PrunedVLM(adapter, method).generate(ctx.prompt, 4)
    assert torch.equal(out.tokens, vanilla.tokens)
    assert out.visual_per_layer.tolist() == [[n] * 4] * 2


def _config(name, adapter):
    if adapter.family == "llava":
        return {"budget": 64}
    return {"ratio": 1 / 9} if name == "sparsevlm" else {"ratio": 0.3}


@pytest.mark.parametrize("name", IN_LLM)
def test_batch_equals_samples_one_by_one(adapter, name):
    # Different image sizes (Qwen: different token counts) and prompt lengths in one batch.
    images = [make_images(1, seed=2, size=(128, 64))[0], make_images(1, seed=1)[0]]
    vlm = stepprune.PrunedVLM(adapter, stepprune.build_method(name, _config(name, adapter)))
    batch = vlm.generate(adapter.prepare(images, PROMPTS[1:]), 3)
    for b in range(2):
        single = vlm.generate(adapter.prepare(images[b: b + 1], PROMPTS[1 + b: 2 + b]), 3)
        assert torch.equal(batch.tokens[b, : single.tokens.shape[1]], single.tokens[0])
        assert torch.equal(batch.visual_per_layer[b], single.visual_per_layer[0])


def _expected_per_layer(name, n, adapter):
    """Visual tokens entering layers 0..3 of the tiny 4-layer LLMs under ``_config`` (independent arithmetic)."""
    kept = 64 if adapter.family == "llava" else int(0.3 * n)
    if name == "fastv":
        return [n, n, kept, kept]
    if name == "dart":
        return [n, n, 4 + 8 * (kept // 8), 4 + 8 * (kept // 8)]
    if name == "pdrop":  # (2, 8, 16, 24) -> layers (1, 1, 2, 3); lam average-matched on 32 layers, 3 decimals
        lam = 0.196 if adapter.family == "llava" else 0.543  # 64/576 and 0.3 of the tokens
        return [n] + [int(n * lam ** s) for s in (2, 3, 4)]
    counts = [c * n // 576 for c in (66, 30, 17)] if n != 576 else [66, 30, 17]
    out = [n]
    for k in counts:
        m = out[-1]
        keep = min(k, m - 1)
        out.append(keep + int((int((m - keep) * 0.3) + 1) / 10) + 1)
    return out


@pytest.mark.parametrize("name", IN_LLM)
def test_budgets_are_respected_and_reported_per_layer(adapter, name):
    ctx = context(adapter, seed=4)
    method = stepprune.build_method(name, _config(name, adapter))
    out = stepprune.PrunedVLM(adapter, method).generate(ctx.prompt, 2)
    for b, n in enumerate(ctx.vision.num_tokens.tolist()):
        assert out.visual_per_layer[b].tolist() == _expected_per_layer(name, n, adapter)
        assert out.kept[b] == n  # nothing is pruned before the LLM
        # The caches hold what entered each layer (prefill-only pruning).
        assert out.cached_visual_per_layer[b].tolist() == out.visual_per_layer[b].tolist()
