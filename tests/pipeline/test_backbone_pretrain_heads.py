"""pipeline.backbone_pretrain.make_heads and stage_parameters: the slot-words head exists, trains in stage 2 and
leaves the other heads' initialisation alone only when its term is on."""

import pytest
import torch

from pipeline.backbone_pretrain import make_heads, stage_parameters
from pipeline.config_loader import ConfigError, from_dict
from pipeline.pretrain_config import PretrainJobConfig
from stepprune.backbones.pretrain.spec import BackboneSpec, build_backbone

TINY = BackboneSpec(vision_hidden=64, vision_layers=2, vision_heads=2, vision_intermediate=64, text_hidden=32,
                    text_layers=2, text_heads=2, text_kv_heads=2, text_intermediate=64, tokenizer_images=20,
                    local_layers=2)


def test_the_slot_head_is_built_only_when_its_term_is_on_and_changes_no_other_head():
    off = PretrainJobConfig(arch=TINY)
    on = from_dict(PretrainJobConfig, {"stage2": {"slot_words_weight": 0.5}})
    on.arch = TINY
    torch.manual_seed(0)
    plain = make_heads(off, vocab=50)
    torch.manual_seed(0)
    with_slot = make_heads(on, vocab=50)
    assert set(plain) == {"patch", "cls"} and set(with_slot) == {"patch", "cls", "slot"}
    assert with_slot["slot"].proj.out_features == 50
    for name in ("patch", "cls"):
        for a, b in zip(plain[name].state_dict().values(), with_slot[name].state_dict().values()):
            assert torch.equal(a, b)


def test_stage_two_trains_the_slot_head_and_stage_one_does_not():
    cfg = from_dict(PretrainJobConfig, {"stage2": {"slot_words_weight": 1.0}})
    cfg.arch = TINY
    model, _ = build_backbone(TINY, seed=0)
    heads = make_heads(cfg, model.config.text_config.vocab_size)
    slot = {id(p) for p in heads["slot"].parameters()}
    assert slot <= {id(p) for p in stage_parameters(model, heads, 2, cfg)}
    assert not slot & {id(p) for p in stage_parameters(model, heads, 1, cfg)}


def test_a_negative_slot_weight_is_refused():
    with pytest.raises((ConfigError, ValueError), match="slot_words_weight"):
        from_dict(PretrainJobConfig, {"stage2": {"slot_words_weight": -1.0}})
