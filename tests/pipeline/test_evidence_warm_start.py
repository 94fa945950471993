"""The evidence warm start on the committed backbone, and ``train.init_selector`` loading what it saved."""

from pathlib import Path

import pytest
import torch

from pipeline.config import TrainJobConfig
from pipeline.config_loader import load
from pipeline.evidence_warm_start import warm_start
from pipeline.model import build_model
from stepprune.benchmarks import synthvqa

BACKBONE = Path(__file__).resolve().parents[2] / "checkpoints" / "synthvqa-llava-tiny"
SMALL = ["method.config.d=32", "method.config.heads=4", "method.config.k_max=8", f"backbone.path={BACKBONE}"]


def test_warm_start_saves_a_selector_that_init_selector_loads(synthvqa_test_folder, tmp_path, one_thread):
    cfg = load(TrainJobConfig, None, SMALL + ["method.config.text_attention=split"])
    items = synthvqa.load(synthvqa_test_folder, limit=6)
    lines = []
    out = warm_start(cfg, items, tmp_path / "sel", steps=3, batch_size=2, log_every=1, log=lines.append)
    assert len(lines) == 3 and all("L_ev" in line for line in lines)
    warmed = build_model(load(TrainJobConfig, None, SMALL + ["method.config.text_attention=split",
                                                             f"train.init_selector={out}"]), torch.device("cpu"))
    fresh = build_model(cfg, torch.device("cpu"))
    saved = {k: v for k, v in warmed.method.state_dict().items()}
    from stepprune.checkpoint import load_checkpoint

    reference = load_checkpoint(out).state_dict()
    assert saved.keys() == reference.keys()
    for k in reference:
        torch.testing.assert_close(saved[k], reference[k])
    # the warm start moved the weights away from the initialisation
    assert any(not torch.equal(saved[k], fresh.method.state_dict()[k]) for k in reference)


def test_init_selector_refuses_another_architecture(synthvqa_test_folder, tmp_path, one_thread):
    cfg = load(TrainJobConfig, None, SMALL)
    out = warm_start(cfg, synthvqa.load(synthvqa_test_folder, limit=4), tmp_path / "sel", steps=1, batch_size=2,
                     log=lambda _: None)
    wider = load(TrainJobConfig, None, SMALL + ["method.config.d=64", f"train.init_selector={out}"])
    with pytest.raises(ValueError, match="does not fit the job's stepprune config"):
        build_model(wider, torch.device("cpu"))


def test_warm_start_needs_evidence(tmp_path):
    cfg = load(TrainJobConfig, None, SMALL)
    with pytest.raises(ValueError, match="no question records evidence"):
        warm_start(cfg, [], tmp_path / "sel", steps=1)


def _no_describe(items):
    return [it for it in items if it.meta["family"] != "describe"]


def test_saliency_targets_are_the_answer_gradient_top_k_and_find_the_evidence(synthvqa_test_folder, one_thread):
    from stepprune.gate_saliency import gate_saliency
    from stepprune.train_gap import answer_conversations

    from pipeline.evidence_warm_start import SALIENCY_G0, saliency_targets

    cfg = load(TrainJobConfig, None, SMALL)
    adapter = build_model(cfg, torch.device("cpu")).adapter
    items = _no_describe(synthvqa.load(synthvqa_test_folder))[:12]
    images = [it.load_image() for it in items]
    targets = saliency_targets(adapter, images, items, 16)
    prompt = adapter.prepare_conversations(images, answer_conversations(items), keys=[it.qid for it in items])
    sal = gate_saliency(adapter, prompt, SALIENCY_G0, "attention")
    assert targets == [s.topk(16).indices.sort().values.tolist() for s in sal]
    # label-free, yet on the committed backbone it points at the evidence far above chance (16 of 576 patches)
    held = [len(set(t) & set(it.meta["evidence"])) / len(set(it.meta["evidence"])) for t, it in zip(targets, items)]
    assert sum(held) / len(held) > 4 * 16 / 576


def test_the_saliency_teacher_needs_no_evidence_and_reports_its_recall_when_there_is_some(
        synthvqa_test_folder, tmp_path, one_thread):
    import dataclasses

    cfg = load(TrainJobConfig, None, SMALL + ["method.config.text_attention=split"])
    items = _no_describe(synthvqa.load(synthvqa_test_folder, limit=8))
    lines = []
    warm_start(cfg, items, tmp_path / "a", steps=2, batch_size=2, teacher="saliency", log_every=1, log=lines.append)
    assert len(lines) == 2 and all("teacher recall" in line for line in lines)
    bare = [dataclasses.replace(it, meta={k: v for k, v in it.meta.items() if k != "evidence"}) for it in items]
    lines = []
    out = warm_start(cfg, bare, tmp_path / "b", steps=2, batch_size=2, teacher="saliency", log_every=1,
                     log=lines.append)
    assert (out / "selector.safetensors").is_file()
    assert len(lines) == 2 and not any("teacher recall" in line for line in lines)
    with pytest.raises(ValueError, match="no question records evidence"):
        warm_start(cfg, bare, tmp_path / "c", steps=1)  # the evidence teacher does need it


def test_an_unknown_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="teacher must be one of"):
        warm_start(load(TrainJobConfig, None, SMALL), [], tmp_path / "sel", steps=1, teacher="fastv")


# --- the training job's stage (train.warm_start) ---------------------------------------------------------------

def _stage_cfg(folder, extra=()):
    return load(TrainJobConfig, None, SMALL + ["method.config.text_attention=split",
                                               f"train.warm_start.folder={folder}", "train.warm_start.steps=2",
                                               "train.warm_start.batch_size=2", "train.warm_start.teacher_k=4",
                                               "train.warm_start.items=8", *extra])


def test_the_stage_trains_once_and_hands_the_fit_its_selector(synthvqa_test_folder, tmp_path, one_thread,
                                                              monkeypatch):
    from pipeline import evidence_warm_start as ws

    cfg = _stage_cfg(synthvqa_test_folder)
    seen = []
    out_cfg = ws.run_stage(cfg, tmp_path / "run", log=lambda _: None, on_metrics=lambda s, m: seen.append((s, m)))
    folder = tmp_path / "run" / "warm_start" / "selector"
    assert out_cfg.train.init_selector == str(folder) and out_cfg.train.warm_start is None
    assert (folder / "selector.safetensors").is_file() and not folder.with_name("selector.partial").exists()
    assert [s for s, _ in seen] == [2] and "L_ev" in seen[0][1]  # logged at the last step (log_every 50 > 2)
    # the run the fit builds starts from exactly those weights
    from stepprune.checkpoint import load_checkpoint

    built = build_model(out_cfg, torch.device("cpu")).method.state_dict()
    for k, v in load_checkpoint(folder).state_dict().items():
        torch.testing.assert_close(built[k], v)
    # a resumed run reuses the folder instead of training again
    monkeypatch.setattr(ws, "warm_start", lambda *a, **k: pytest.fail("trained twice"))
    lines = []
    assert ws.run_stage(cfg, tmp_path / "run", log=lines.append).train.init_selector == str(folder)
    assert lines == [f"[warm-start] reusing {folder}"]


def test_the_stage_is_a_no_op_when_off_and_refuses_a_missing_folder(tmp_path):
    from pipeline.evidence_warm_start import run_stage

    plain = load(TrainJobConfig, None, SMALL)
    assert run_stage(plain, tmp_path) is plain
    with pytest.raises(FileNotFoundError, match="train.warm_start.folder=.*nowhere.*questions.jsonl"):
        run_stage(_stage_cfg(tmp_path / "nowhere"), tmp_path / "run")


def test_warm_start_and_init_selector_are_exclusive_and_checked(tmp_path):
    from pipeline.config_loader import ConfigError

    with pytest.raises((ValueError, ConfigError), match="set one"):
        _stage_cfg(tmp_path, [f"train.init_selector={tmp_path}"])
    with pytest.raises((ValueError, ConfigError), match="must be >= 1"):
        _stage_cfg(tmp_path, ["train.warm_start.steps=0"])


def test_the_warm_start_trains_the_encoder_whatever_train_trainable_leaves_to_the_lm_steps(
        synthvqa_test_folder, tmp_path, one_thread):
    from stepprune.checkpoint import load_checkpoint

    # train.trainable=[decoder.stop] is for the LM-loss steps after the stage; the stage itself must still train
    # the encoder and first pointer step (it once built its model frozen, and L_ev hardly moved)
    cfg = load(TrainJobConfig, None, SMALL + ["train.trainable=[decoder.stop]"])
    out = warm_start(cfg, synthvqa.load(synthvqa_test_folder, limit=4), tmp_path / "sel", steps=2, batch_size=2,
                     seed=0, log=lambda _: None)
    torch.manual_seed(0)
    init = build_model(load(TrainJobConfig, None, SMALL), torch.device("cpu")).method.state_dict()
    saved = load_checkpoint(out).state_dict()
    moved = {k for k in init if init[k].is_floating_point() and not torch.equal(init[k], saved[k])}
    assert any(k.startswith("encoder.") for k in moved) and "decoder.pointer_q.weight" in moved


def test_the_saliency_teacher_runs_once_per_question_and_shares_the_tower(synthvqa_test_folder, tmp_path, one_thread,
                                                                          monkeypatch):
    # 6 steps of 2 from 4 questions draw each several times: each question's targets are computed once, from the
    # batch's own tower output cut to the question's rows, and equal a computation on that question alone.
    import pipeline.evidence_warm_start as ws

    cfg = load(TrainJobConfig, None, SMALL + ["method.config.text_attention=split"])
    items = _no_describe(synthvqa.load(synthvqa_test_folder))[:4]
    calls, towers, checks = [], [], []
    real_targets = ws.saliency_targets

    def counting(adapter, images, batch, k, vision=None):
        assert vision is not None and vision.tokens.shape[0] == len(batch)
        calls.extend(it.qid for it in batch)
        checks.append(1)
        got = real_targets(adapter, images, batch, k, vision=vision)
        assert got == real_targets(adapter, images, batch, k)  # the shared tower changes nothing
        return got

    monkeypatch.setattr(ws, "saliency_targets", counting)
    model = build_model(cfg, torch.device("cpu"))
    real_tower = type(model.adapter).vision_features

    def tower(self, prompt):
        towers.append(prompt)
        return real_tower(self, prompt)

    monkeypatch.setattr(type(model.adapter), "vision_features", tower)
    warm_start(cfg, items, tmp_path / "sel", steps=6, batch_size=2, teacher="saliency", teacher_k=8,
               log=lambda _: None)
    assert sorted(calls) == sorted(it.qid for it in items)  # every question drawn in 12 draws of 4, each once
    # one tower pass per step for the selector and the teacher together (each check above adds its own)
    assert len(towers) == 6 + len(checks)
