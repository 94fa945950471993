"""Every YAML config validates against its typed schema; unknown keys and bad values are clear errors."""

from pathlib import Path

import pytest

from pipeline.config import TrainJobConfig
from pipeline.config_loader import ConfigError, load
from pipeline.efficiency_config import EfficiencyJobConfig
from pipeline.eval_config import EvalJobConfig, MatrixConfig
from pipeline.pretrain_config import PretrainJobConfig
from pipeline.report_config import ReportConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = {"matrix_": MatrixConfig, "eval_": EvalJobConfig, "efficiency_": EfficiencyJobConfig,
           "pretrain_": PretrainJobConfig, "report_": ReportConfig}


def _schema(path: Path):
    return next((cls for prefix, cls in SCHEMAS.items() if path.name.startswith(prefix)), TrainJobConfig)


@pytest.mark.parametrize("path", sorted((ROOT / "jobs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_job_config_validates(path):
    load(_schema(path), path)


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'optim.lrr'; valid keys here: \["):
        load(TrainJobConfig, f)


def test_overrides_are_typed_and_checked():
    cfg = load(TrainJobConfig, None, ["optim.lr=3e-4", "train.max_steps=7", "scaling.num_workers=2"])
    assert cfg.optim.lr == 3e-4 and cfg.train.max_steps == 7 and cfg.grad_accum == 4
    with pytest.raises(ConfigError, match="train.max_steps: expected an integer"):
        load(TrainJobConfig, None, ["train.max_steps=many"])
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        load(TrainJobConfig, None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="must be a multiple of micro_batch_size"):
        load(TrainJobConfig, None, ["train.global_batch_size=6"])
    assert load(TrainJobConfig, None, ["train.loss_per=question"]).train.loss_per == "question"
    with pytest.raises(ConfigError, match="train.loss_per"):
        load(TrainJobConfig, None, ["train.loss_per=image"])


def test_method_config_is_validated_by_the_method():
    with pytest.raises(ConfigError, match="unknown key"):
        load(TrainJobConfig, None, ["method.config={not_a_field: 1}"])
    with pytest.raises(ConfigError, match="training-free"):
        load(TrainJobConfig, None, ["method.name=random"])
