"""Real-size configs without weights: meta models for counting, random-weight models that run end to end, and the
offline processors producing the real number of visual tokens."""

import pytest
import torch

import stepprune
from stepprune.efficiency import build_adapter, real_config
from stepprune.efficiency.backbones import offline_processor
from stepprune.efficiency.latency import random_prompt
from tests.conftest import make_images


@pytest.mark.parametrize("name,size,params", [("llava15_7b", 336, 7.06e9), ("qwen2_5_vl_7b", 672, 8.29e9)])
def test_real_configs_build_on_meta_with_the_published_sizes(name, size, params):
    adapter = build_adapter(real_config(name))
    assert adapter.device.type == "meta"
    n = sum(p.numel() for p in adapter.model.parameters())
    assert n == pytest.approx(params, rel=0.01)
    processor, config = offline_processor(real_config(name), size)
    enc = adapter.preprocessor.__class__(processor, config.image_token_id).encode(
        make_images(1, size=(size, size)), [[{"from": "human", "value": "<image>\nWhat is it?"}]])
    assert int((enc["input_ids"] == config.image_token_id).sum()) == 576  # LLaVA's 576; Qwen at 672 px: 24 x 24


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_random_weight_backbones_run_the_pipeline(family, llava_small, qwen_small):
    config = llava_small if family == "llava" else qwen_small
    adapter = build_adapter(config, device="cpu", dtype=torch.bfloat16, image_size=32)
    assert adapter.dtype == torch.bfloat16 and adapter.device.type == "cpu"
    prompt = random_prompt(adapter, 2, "What color is the square?", image_size=32)
    out = stepprune.PrunedVLM(adapter, stepprune.build_method("vanilla")).generate(prompt, max_new_tokens=2)
    assert out.tokens.shape == (2, 2) and out.kept.tolist() == [16, 16]
    twin = build_adapter(config.__class__.from_dict(config.to_dict()), device="cpu", dtype=torch.bfloat16,
                         image_size=32)
    for a, b in zip(adapter.model.parameters(), twin.model.parameters()):  # seeded: the same random weights
        assert torch.equal(a, b)
