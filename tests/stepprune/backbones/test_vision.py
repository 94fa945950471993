"""Vision features: the selected layer, CLS, and attention recomputed without eager attention."""

import pytest
import torch

import stepprune
from stepprune.backbones.tiny import TinyQwenSpec, build_tiny_qwen2_5_vl
from tests.conftest import PROMPTS, make_images


def test_llava_features_are_the_selected_layer(llava):
    prompt = llava.prepare(make_images(2), PROMPTS[:2])
    vision = llava.vision_features(prompt)
    hs = llava.model.model.vision_tower(prompt.pixel_inputs["pixel_values"], output_hidden_states=True).hidden_states
    sel = hs[llava.model.config.vision_feature_layer]
    assert torch.equal(vision.tokens, sel[:, 1:]) and torch.equal(vision.cls, sel[:, 0])
    assert vision.grid[0].tolist() == [24, 24] and vision.num_tokens.tolist() == [576, 576]


def test_llava_vision_attention_equals_eager_clip(tiny_llava_dir):
    eager = stepprune.load_backbone(tiny_llava_dir, attn_implementation="eager")
    prompt = eager.prepare(make_images(2, seed=1), PROMPTS[:2])
    vision = eager.vision_features(prompt)
    out = eager.model.model.vision_tower(prompt.pixel_inputs["pixel_values"], output_attentions=True)
    assert len(out.attentions) == 2
    for layer in (-1, -2):
        torch.testing.assert_close(vision.attention(layer), out.attentions[layer].float(), rtol=0, atol=1e-5)


def test_qwen_vision_attention_is_in_raster_merge_order(tmp_path):
    # With a one-block tower on a constant image every patch has the same features, so the attention logits
    # depend only on the relative 2-D offset (RoPE). That holds only if rows are mapped to the right patches.
    adapter = stepprune.load_backbone(build_tiny_qwen2_5_vl(tmp_path, TinyQwenSpec(vision_depth=1)))
    from PIL import Image

    prompt = adapter.prepare([Image.new("RGB", (96, 96), (120, 30, 200))], PROMPTS[:1])
    vision = adapter.vision_features(prompt)
    q, k, valid = vision.qk(-1)
    logits = (q[0].float() @ k[0].float().transpose(-1, -2)).mean(0)  # (T, T), T = 4 * 144
    rows, cols = vision.grid[0].tolist()
    t = torch.arange(4 * rows * cols)
    unit, sub = t // 4, t % 4
    y = (unit // cols) * 2 + sub // 2
    x = (unit % cols) * 2 + sub % 2
    # Pairs with the same offset (dy, dx) = (1, 2) must have equal logits.
    pairs = [(i, j) for i in range(0, len(t), 37) for j in range(len(t)) if y[j] - y[i] == 1 and x[j] - x[i] == 2]
    vals = torch.stack([logits[i, j] for i, j in pairs])
    assert len(pairs) > 5 and torch.allclose(vals, vals[0].expand_as(vals), atol=1e-4)
    assert valid.all()


def test_qwen_windowed_block_attention_is_refused(qwen):
    prompt = qwen.prepare(make_images(1), PROMPTS[:1])
    vision = qwen.vision_features(prompt)
    with pytest.raises(ValueError, match="windowed"):
        vision.qk(0)
    assert vision.attention(-1).shape[-1] == 4 * 144


def test_attention_rows_of_padding_queries_are_zero(qwen):
    images = [make_images(1, size=(96, 96))[0], make_images(1, seed=3, size=(64, 64))[0]]
    vision = qwen.vision_features(qwen.prepare(images, PROMPTS[:2]))
    att = vision.attention(-1)
    n_small = 4 * int(vision.num_tokens[1])
    assert att[1, :, n_small:].abs().sum() == 0 and att[1, :, :n_small, n_small:].abs().sum() == 0
    torch.testing.assert_close(att[1, :, :n_small].sum(-1), torch.ones(att.shape[1], n_small))
