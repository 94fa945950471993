"""Small LLaVA- and Qwen2.5-VL-architecture configs for counting FLOPs on the meta device (instant to build)."""

from __future__ import annotations

import pytest


def small_llava_config():
    """CLIP 2 x 64 wide (image 56, patch 14 -> 16 patches), projector 64 -> 96 -> 96, LLaMA 3 x 96 wide with GQA."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, patch_size=14, projection_dim=64)
    text = LlamaConfig(vocab_size=500, hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=4, image_seq_length=16,
                       vision_feature_layer=-2, vision_feature_select_strategy="default")


def small_qwen_config():
    """A Qwen2.5-VL ViT 2 x 32 wide (patch 4, window 16), Qwen2 LLM 4 x 32 wide with 4 / 2 heads."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                           patch_size=4, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
                           fullatt_block_indexes=[1]),
        image_token_id=5, video_token_id=6, vision_start_token_id=3, vision_end_token_id=4,
    )


@pytest.fixture()
def llava_small():
    return small_llava_config()


@pytest.fixture()
def qwen_small():
    return small_qwen_config()
