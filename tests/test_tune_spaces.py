"""Every tune space validates against the training config; unknown keys are errors naming the key."""

from pathlib import Path

import pytest

from pipeline.config_loader import ConfigError
from pipeline.tune_space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "tune_spaces").glob("*.yaml"))


def test_spaces_are_shipped_for_every_operating_point():
    names = {p.stem for p in SPACES}
    assert {"embedded", "synthvqa_k192", "synthvqa_k128", "synthvqa_k64"} <= names
    assert {"llava15_7b_k192", "llava15_7b_k128", "llava15_7b_k64"} <= names


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_space_validates(path):
    space = load_space(path)
    assert {"method.config.lambda_", "method.config.beta_end", "method.config.gamma", "method.config.tau"} <= set(
        space.space)


def test_unknown_keys_are_errors(tmp_path):
    base = (ROOT / "tune_spaces" / "embedded.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(base.replace("method.config.tau:", "method.config.taux:"))
    with pytest.raises(ConfigError, match=r"unknown key 'method.config.taux': StepPruneConfig has no field"):
        load_space(bad)
    bad.write_text(base.replace("train.max_steps:", "train.max_step:"))
    with pytest.raises(ConfigError, match=r"unknown key 'train.max_step'"):
        load_space(bad)


def test_a_metric_the_loop_never_reports_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "tune_spaces" / "embedded.yaml").read_text().replace("metric: val_objective",
                                                                                 "metric: val_f1"))
    with pytest.raises(ConfigError, match="not reported"):
        load_space(bad)


def test_validation_must_come_with_every_report_to_tune(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "tune_spaces" / "embedded.yaml").read_text().replace("validate.every: 8",
                                                                                  "validate.every: 16"))
    with pytest.raises(ConfigError, match=r"validate.every \(16\) must equal train.report_every \(8\)"):
        load_space(bad)
