"""Keep-all parity: our composed path reproduces the unmodified HF model on both backbone families."""

import torch

import stepprune
from tests.conftest import PROMPTS, make_images
from tests.stepprune.backbones.reference import hf_generate, hf_logits


def _keep_all_inputs(adapter, prompt, position_mode="original"):
    vision = adapter.vision_features(prompt)
    return adapter.splice(prompt, adapter.keep_all(vision), vision, position_mode)


def test_keep_all_reproduces_hf_logits(adapter):
    prompt = adapter.prepare(make_images(3), PROMPTS)  # mixed prompt lengths -> left padding
    inputs = _keep_all_inputs(adapter, prompt)
    result = adapter.forward(inputs)
    for b in range(3):
        ours = adapter.runner.logits(result.hidden[b][inputs.valid[b]])
        ref = hf_logits(adapter, prompt, b)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_keep_all_reproduces_hf_greedy_tokens(adapter):
    prompt = adapter.prepare(make_images(3, seed=1), PROMPTS)
    ours = adapter.generate(_keep_all_inputs(adapter, prompt), max_new_tokens=8).tokens
    assert torch.equal(ours, hf_generate(adapter, prompt, 8))


def test_vanilla_method_equals_hf_through_pruned_vlm(adapter):
    prompt = adapter.prepare(make_images(2, seed=2), PROMPTS[:2])
    out = stepprune.PrunedVLM(adapter, stepprune.build_method("vanilla")).generate(prompt, max_new_tokens=6)
    assert torch.equal(out.tokens, hf_generate(adapter, prompt, 6))
    assert out.kept.tolist() == prompt.input_ids.eq(adapter.image_token_id).sum(1).tolist()


def test_projection_equals_the_models_own_image_features(adapter):
    prompt = adapter.prepare(make_images(2, seed=3), PROMPTS[:2])
    vision = adapter.vision_features(prompt)
    ours = adapter.project(vision.tokens)
    if adapter.family == "llava":
        own = adapter.model.get_image_features(pixel_values=prompt.pixel_inputs["pixel_values"]).pooler_output
    else:
        own = adapter.model.get_image_features(prompt.pixel_inputs["pixel_values"],
                                               prompt.pixel_inputs["image_grid_thw"]).pooler_output
    for b, o in enumerate(own):
        torch.testing.assert_close(ours[b, : o.shape[0]], o, rtol=0, atol=1e-6)


def test_contiguous_positions_without_pruning_change_nothing_on_llava(llava):
    # Unpruned LLaVA positions have no gaps, so both conventions must give identical logits.
    prompt = llava.prepare(make_images(2, seed=4), PROMPTS[:2])
    a = llava.forward(_keep_all_inputs(llava, prompt, "original")).hidden
    b = llava.forward(_keep_all_inputs(llava, prompt, "contiguous")).hidden
    torch.testing.assert_close(a, b, rtol=0, atol=0)
