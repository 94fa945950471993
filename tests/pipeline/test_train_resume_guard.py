"""Re-running a run name resumes it, so the job refuses to resume under a config that did not train the run."""

import pytest
import yaml

from pipeline.config import TrainJobConfig
from pipeline.config_loader import dump, load
from pipeline.train_job import check_resumable


def _cfg(*extra):
    return load(TrainJobConfig, "jobs/configs/embedded.yaml", list(extra))


def test_a_new_run_name_and_a_longer_run_may_resume(tmp_path):
    check_resumable(_cfg(), tmp_path / "never-trained")  # nothing saved: nothing to compare
    dump(_cfg(), tmp_path / "config.yaml")
    check_resumable(_cfg("train.max_steps=80", "eval.max_items=100", "storage.export=ckpt"), tmp_path)


def test_another_recipe_under_the_same_name_is_refused_with_the_keys_and_the_way_out(tmp_path):
    # what an upgrade from the single-stage default looked like: same name, another recipe
    dump(_cfg("train.warm_start=null", "train.trainable=null", "method.config.tau=0.3"), tmp_path / "config.yaml")
    with pytest.raises(ValueError) as err:
        check_resumable(_cfg(), tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "storage.name" in msg and "delete" in msg
    assert "method.config.tau: 0.3 -> 0.1" in msg and "train.trainable: None -> ['decoder.stop', 'denoiser']" in msg


def test_a_key_an_older_version_did_not_write_counts_as_null(tmp_path):
    saved = yaml.safe_load(yaml.safe_dump(__import__("dataclasses").asdict(_cfg("train.trainable=null"))))
    del saved["train"]["trainable"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resumable(_cfg("train.trainable=null"), tmp_path)
    with pytest.raises(ValueError, match="train.trainable"):
        check_resumable(_cfg(), tmp_path)
