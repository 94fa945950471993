"""What the four training-free pre-LLM baselines share: registration, budgets on both backbones, and batching."""

import pytest
import torch

import stepprune
from tests.conftest import PROMPTS, make_images
from tests.stepprune.methods.prellm_helpers import context, generate

NAMES = ["prumerge", "prumerge_plus", "visionzip", "holov"]


@pytest.mark.parametrize("name", NAMES)
def test_registered_as_text_agnostic_pre_llm_methods(name):
    cls = stepprune.method_class(name)
    assert (cls.hook_point, cls.uses_text, cls.training_free) == ("pre_llm", False, True)
    m = stepprune.build_method(name, budget=64)
    assert m.position_mode_for("llava") == "contiguous" and m.position_mode_for("qwen2_5_vl") == "original"


@pytest.mark.parametrize("name", NAMES)
def test_budget_is_respected_on_both_backbones(adapter, name):
    cfg = {"budget": 64} if adapter.family == "llava" else {"ratio": 0.3}
    expected = 64 if adapter.family == "llava" else int(0.3 * 144)
    prompt = adapter.prepare(make_images(2), PROMPTS[:2])
    out = generate(adapter, stepprune.build_method(name, cfg), prompt, max_new_tokens=2)
    assert out.kept.tolist() == [expected] * 2
    assert out.visual_per_layer[:, 0].tolist() == [expected] * 2


@pytest.fixture(scope="module")
def batch_and_singles():
    """Per backbone family: one context over three images and one context per image (built once)."""
    cache = {}

    def get(adapter):
        if adapter.family not in cache:
            if adapter.family == "qwen2_5_vl":  # different image sizes: different N per sample, padded features
                images = [make_images(1, seed=2)[0], make_images(1, seed=3, size=(128, 64))[0],
                          make_images(1, seed=4)[0]]
            else:
                images = make_images(3, seed=2)
            cache[adapter.family] = (context(adapter, images=images), [context(adapter, images=[i]) for i in images])
        return cache[adapter.family]

    return get


@pytest.mark.parametrize("name,cfg", [(n, {"budget": 64}) for n in NAMES] + [("prumerge", {}), ("prumerge_plus", {})])
def test_batch_equals_samples_one_by_one(adapter, batch_and_singles, name, cfg):
    if adapter.family == "qwen2_5_vl" and cfg:
        cfg = {"ratio": 0.3}
    method = stepprune.build_method(name, cfg)
    batch_ctx, single_ctxs = batch_and_singles(adapter)
    batch = method.select(batch_ctx)
    for b, ctx in enumerate(single_ctxs):
        single = method.select(ctx)
        k = int(single.count[0])
        assert int(batch.count[b]) == k
        assert torch.equal(batch.source_index[b, :k], single.source_index[0, :k])
        torch.testing.assert_close(batch.embeds[b, :k], single.embeds[0, :k], rtol=1e-4, atol=1e-6)
