"""A sweep whose base config runs the warm start trains it once and starts every trial from it; a space that
samples a key the warm start reads is refused."""

from pathlib import Path

import pytest

from pipeline.config import TrainJobConfig
from pipeline.config_loader import ConfigError, load
from pipeline.tune_space import load_space, shares_warm_start

REPO = Path(__file__).resolve().parents[2]
BACKBONE = REPO / "checkpoints" / "synthvqa-llava-tiny"
SMALL = ["method.config.d=32", "method.config.heads=4", "method.config.k_max=8", f"backbone.path={BACKBONE}",
         "method.config.text_attention=split"]


def _space(tmp_path, sampled: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(f"""
base_config: {REPO / 'jobs/configs/embedded.yaml'}
name: t
target_k: 12
overrides: {{validate.every: 10}}
space:
  {sampled}: {{type: choice, values: [0.1, 0.3]}}
""")
    return path


def test_lm_stage_keys_share_the_warm_start_and_architecture_keys_do_not():
    assert all(shares_warm_start(k) for k in ("method.config.lambda_", "method.config.tau", "method.config.gamma",
                                              "method.config.beta_end", "optim.lr", "train.max_steps"))
    assert not any(shares_warm_start(k) for k in ("method.config.d", "method.config.k_max", "method.config.init_std",
                                                  "method.config.text_attention", "train.seed",
                                                  "train.warm_start.teacher_k", "backbone.path"))


def test_a_space_sampling_what_the_warm_start_reads_is_refused(tmp_path):
    assert load_space(_space(tmp_path, "method.config.tau")).space  # the embedded base runs the warm start
    with pytest.raises(ConfigError, match=r"samples method.config.init_std, which the warm start reads"):
        load_space(_space(tmp_path, "method.config.init_std"))
    # with a warm start per trial (train.warm_start: null) any key may be sampled
    path = _space(tmp_path, "method.config.init_std")
    path.write_text(path.read_text().replace("validate.every: 10", "validate.every: 10, train.warm_start: null, "
                                             "train.trainable: null"))
    assert load_space(path).space


def test_the_shared_warm_start_is_trained_once_per_setting(synthvqa_test_folder, tmp_path, one_thread):
    from pipeline.sweep import shared_warm_start

    over = SMALL + ["train.warm_start.steps=1", "train.warm_start.batch_size=2", "train.warm_start.items=4",
                    f"train.warm_start.folder={synthvqa_test_folder}"]
    base = load(TrainJobConfig, REPO / "jobs/configs/embedded.yaml", over)
    shared = shared_warm_start(base, tmp_path)
    assert shared[0] == "train.warm_start=null" and shared[1].startswith("train.init_selector=")
    folder = Path(shared[1].split("=", 1)[1])
    assert (folder / "meta.json").exists()
    stamp = (folder / "meta.json").stat().st_mtime_ns
    assert shared_warm_start(base, tmp_path) == shared and (folder / "meta.json").stat().st_mtime_ns == stamp
    # a different warm-start setting gets its own folder; the trial config it yields loads
    other = shared_warm_start(load(TrainJobConfig, REPO / "jobs/configs/embedded.yaml",
                                   over + ["train.warm_start.teacher_k=8"]), tmp_path)
    assert other[1] != shared[1]
    trial = load(TrainJobConfig, REPO / "jobs/configs/embedded.yaml", over + shared)
    assert trial.train.warm_start is None and trial.train.init_selector == str(folder)
    assert shared_warm_start(trial, tmp_path) == []
