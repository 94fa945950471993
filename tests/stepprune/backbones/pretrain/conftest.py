"""Tiny versions of the pretraining pieces: a small LLaVA of the SynthVQA shape (576 patch tokens) built once."""

import pytest

from stepprune.backbones.pretrain.spec import BackboneSpec

TINY = BackboneSpec(vision_hidden=64, vision_layers=2, vision_heads=2, vision_intermediate=64, text_hidden=32,
                    text_layers=2, text_heads=2, text_kv_heads=2, text_intermediate=64, tokenizer_images=20,
                    local_layers=2)


@pytest.fixture(scope="session")
def tiny_pretrain():
    """(model, processor) of the tiny spec, seed 0."""
    from stepprune.backbones.pretrain.spec import build_backbone

    return build_backbone(TINY, seed=0)
