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
