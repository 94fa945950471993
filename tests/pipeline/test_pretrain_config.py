"""The backbone-pretraining configs load with their typed schemas; bad values fail clearly."""

from pathlib import Path

import pytest

from pipeline.config_loader import ConfigError, load
from pipeline.pretrain_config import EvaluateBackboneConfig, PretrainJobConfig

ROOT = Path(__file__).resolve().parents[2]


def test_committed_recipe_loads():
    cfg = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone.yaml")
    assert cfg.output == "checkpoints/synthvqa-llava-tiny"
    assert cfg.arch.num_patches == 576 and cfg.scaling.num_workers == 1 and not cfg.scaling.use_gpu
    assert cfg.stage2.phases[-1].max_objects == 20  # the last phase is the evaluation distribution
    assert cfg.eval.split == "test" and cfg.eval.n_images * 8 >= 2000
    assert cfg.total_steps == sum(p.steps for p in cfg.stage1.phases) + sum(p.steps for p in cfg.stage2.phases)


def test_first_recipe_is_kept_apart_from_the_committed_checkpoint():
    first = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone_v1.yaml")
    committed = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone.yaml")
    assert first.output != committed.output and first.storage.name != committed.storage.name
    assert first.loop.precision == "fp32" and not first.stage2.ground_referents
    assert first.arch == committed.arch and first.stage1 == committed.stage1 and first.eval == committed.eval


def test_yes_no_variant_differs_only_in_its_phase_and_precision():
    base = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone_v1.yaml")
    var = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone_yesno.yaml")
    assert var.output != base.output and var.storage.name != base.storage.name  # never overwrites the committed one
    assert base.loop.precision == "fp32" and var.loop.precision == "bf16"
    assert [p.families for p in var.stage2.phases if p.families] == [["existence", "mme"]]
    assert var.arch == base.arch and var.stage1 == base.stage1 and var.eval == base.eval
    assert var.stage2.phases[-1].max_objects == 20


def test_focus_variant_is_the_yes_no_variant_with_focused_draws_and_per_question_loss():
    yesno = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone_yesno.yaml")
    var = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone_focus.yaml")
    assert var.output not in (yesno.output, "checkpoints/synthvqa-llava-tiny")
    assert var.storage.name != yesno.storage.name
    assert var.stage2.loss_per == "question" and yesno.stage2.loss_per == "token"
    focused = [sorted(p.family_weights) for p in var.stage2.phases if p.family_weights]
    assert focused == [["existence", "mme"], ["mc_mmbench", "mc_science"]]
    assert not any(p.families for p in var.stage2.phases)
    assert var.arch == yesno.arch and var.stage1 == yesno.stage1 and var.loop == yesno.loop
    assert var.stage2.phases[-1].max_objects == 20


def test_committed_recipe_is_the_yes_no_variant_grounding_each_referent_over_all_of_stage2():
    yesno = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone_yesno.yaml")
    var = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone.yaml")
    assert var.output == "checkpoints/synthvqa-llava-tiny" != yesno.output
    assert var.storage.name != yesno.storage.name
    assert sorted(var.stage2.ground_referents) == ["mc_mmbench", "relation"] and not yesno.stage2.ground_referents
    assert var.stage2.ground_steps == sum(p.steps for p in var.stage2.phases)  # grounded over the whole stage
    assert [p.families for p in var.stage2.phases] == [p.families for p in yesno.stage2.phases]
    weighted = [p.family_weights for p in var.stage2.phases if p.family_weights]
    assert len(weighted) == 2 and all(w["relation"] > 1 and w["mc_mmbench"] > 1 for w in weighted)
    assert var.arch == yesno.arch and var.stage1 == yesno.stage1 and var.loop == yesno.loop
    assert var.stage2.phases[-1].max_objects == 20


def test_overrides_and_errors():
    cfg = load(PretrainJobConfig, None, ["scaling.use_gpu=true", "stage2.phases=[{steps: 3}]"])
    assert cfg.scaling.use_gpu and cfg.stage2.phases[0].steps == 3 and cfg.stage2.phases[0].max_objects == 20
    with pytest.raises(ConfigError, match="exactly one Ray Train worker"):
        load(PretrainJobConfig, None, ["scaling.num_workers=2"])
    with pytest.raises(ConfigError, match="SynthVQA images are 192 px"):
        load(PretrainJobConfig, None, ["arch.patch_size=16"])
    with pytest.raises(ConfigError, match=r"unknown key 'stage1.lr'"):
        load(PretrainJobConfig, None, ["stage1.lr=1"])
    with pytest.raises(ConfigError, match=r"loop.precision: 'fp16' is not one of \['fp32', 'bf16'\]"):
        load(PretrainJobConfig, None, ["loop.precision=fp16"])
    with pytest.raises(ConfigError, match=r"stage2.loss_per: 'image' is not one of \['token', 'question'\]"):
        load(PretrainJobConfig, None, ["stage2.loss_per=image"])
    assert load(PretrainJobConfig, None, ["stage2.loss_per=question"]).stage2.loss_per == "question"
    with pytest.raises(ConfigError, match=r"stage2.ground_referents: unknown question families \['left'\]"):
        load(PretrainJobConfig, None, ["stage2.ground_referents=[relation, left]"])
    assert load(PretrainJobConfig, None, ["stage2.ground_referents=[relation]"]).stage2.ground_referents == [
        "relation"]
    with pytest.raises(ConfigError, match="unknown question families"):
        load(PretrainJobConfig, None, ["stage2.phases=[{steps: 3, families: [colour]}]"])
    with pytest.raises(ConfigError, match="multiple of loop.report_every"):
        load(PretrainJobConfig, None, ["loop.report_every=7"])
    assert load(EvaluateBackboneConfig, None, ["eval.limit=10"]).eval.methods == ["vanilla", "blind"]


def test_committed_recipe_is_the_referents_recipe_plus_the_slot_words_term():
    import dataclasses

    earlier = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone_referents.yaml")
    committed = load(PretrainJobConfig, ROOT / "jobs" / "configs" / "pretrain_backbone.yaml")
    assert committed.stage2.slot_words_weight > 0 and earlier.stage2.slot_words_weight == 0
    assert earlier.output != committed.output and earlier.storage.name != committed.storage.name
    same = dataclasses.replace(earlier, output=committed.output, storage=committed.storage,
                               stage2=dataclasses.replace(earlier.stage2,
                                                          slot_words_weight=committed.stage2.slot_words_weight))
    assert same == committed
