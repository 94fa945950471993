"""The training job resolves every configured path before the config reaches Ray workers, whose working
directory is not the caller's."""

from pathlib import Path

from pipeline.config import TrainJobConfig
from pipeline.config_loader import load
from pipeline.train_job import absolutize


def test_every_path_is_resolved_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "embedded.yaml"
    cfg = absolutize(load(TrainJobConfig, str(config), ["train.init_selector=runs/warm/selector",
                                                        "train.warm_start=null"]))
    paths = [cfg.backbone.path, cfg.data.corpus, cfg.data.shards, cfg.storage.root, cfg.validate.folder,
             cfg.train.init_selector]
    assert all(Path(p).is_absolute() for p in paths)
    assert cfg.train.init_selector == str(tmp_path.resolve() / "runs" / "warm" / "selector")
    default = absolutize(load(TrainJobConfig, str(config), []))  # the embedded default's warm start reads a split
    assert default.train.warm_start.folder == str(tmp_path.resolve() / "data" / "synthvqa" / "native" / "train")


def test_an_unset_init_selector_stays_unset():
    cfg = absolutize(load(TrainJobConfig, None, []))
    assert cfg.train.init_selector is None
