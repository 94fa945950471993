"""The SynthVQA backbone architecture: LLaVA-1.5 shape, SynthVQA tokenizer, save/load through the adapter."""

import torch

import stepprune
from stepprune.backbones.pretrain.spec import (
    LOCAL_OFFSETS,
    POSITION_DIMS,
    BackboneSpec,
    build_backbone,
    grid_code,
    parameter_counts,
    save_backbone,
)
from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPES, WORDS

from .conftest import TINY


def test_llava_1_5_shape(tiny_pretrain):
    model, processor = tiny_pretrain
    cfg = model.config
    assert cfg.vision_feature_layer == -2 and cfg.vision_feature_select_strategy == "default"
    assert cfg.image_seq_length == 576 == TINY.num_patches
    assert model.model.vision_tower.embeddings.position_embedding.weight.shape[0] == 577  # + CLS
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                      {"type": "text", "text": "Q?"}]}],
                                         add_generation_prompt=True, tokenize=False)
    assert text == "USER: <image>\nQ? ASSISTANT:"
    counts = parameter_counts(model)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_vocabulary_words_are_single_tokens(tiny_pretrain):
    tok = tiny_pretrain[1].tokenizer
    for w in [*COLOR_NAMES, *SHAPES, *WORDS, "yes", "no", "12", "A"]:
        assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1, w


def test_position_code_and_local_heads_at_init(tiny_pretrain):
    tower = tiny_pretrain[0].model.vision_tower
    w = tower.embeddings.position_embedding.weight
    assert torch.equal(w[0], torch.zeros_like(w[0]))  # CLS
    torch.testing.assert_close(w[1:, -POSITION_DIMS:], grid_code(24))
    assert not w[:, :-POSITION_DIMS].any() and not tower.embeddings.patch_embedding.weight[-POSITION_DIMS:].any()
    codes = grid_code(24)
    sims = codes @ codes.T
    assert (sims.argmax(dim=1) == torch.arange(576)).all()  # every patch is most like itself

    # each local head of the first layers starts by looking at its neighbour
    model, _ = build_backbone(TINY, seed=0, processor=tiny_pretrain[1])
    model.set_attn_implementation("eager")
    att = model.model.vision_tower(torch.randn(1, 3, 192, 192), output_attentions=True).attentions
    q = 12 * 24 + 12
    for layer in range(TINY.local_layers):
        for h, (dr, dc) in enumerate(LOCAL_OFFSETS[layer][: TINY.vision_heads]):
            assert int(att[layer][0, h, 1 + q].argmax()) - 1 == (12 + dr) * 24 + 12 + dc


def test_saved_backbone_loads_through_the_adapter(tiny_pretrain, tmp_path):
    model, processor = tiny_pretrain
    folder = save_backbone(model, processor, tmp_path / "bb")
    adapter = stepprune.load_backbone(folder)
    assert adapter.family == "llava"
    for name, p in model.state_dict().items():
        torch.testing.assert_close(adapter.model.state_dict()[name], p)


def test_spec_validation():
    import pytest

    with pytest.raises(ValueError):
        BackboneSpec(image_size=190)
    with pytest.raises(ValueError):
        BackboneSpec(text_hidden=100, text_heads=3)
    with pytest.raises(ValueError, match="local_layers needs"):
        BackboneSpec(vision_hidden=64, vision_heads=4)
    with pytest.raises(ValueError, match="local_layers must be"):
        BackboneSpec(vision_layers=2, local_layers=3)
