"""Ray Tune over Ray Train: trials are real training runs with validation, nested MLflow runs, restore by name."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import TrainJobConfig
from pipeline.config_loader import dump, load
from pipeline.tune_space import load_space
from stepprune.benchmarks.fixtures import write_pope
from tests.pipeline.train_fixtures import train_overrides

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_sweep_runs_trials_writes_the_best_config_and_restores(ray_session, tmp_path, tiny_llava_dir, monkeypatch):
    from pipeline.sweep import run

    monkeypatch.chdir(tmp_path)  # the space's paths are relative to here; Tune runs trials in their own directory
    pope = write_pope(tmp_path / "pope")
    base = load(TrainJobConfig, REPO / "jobs/configs/embedded.yaml", train_overrides(
        tmp_path, tiny_llava_dir, **{"scaling.num_workers": 1, "deepspeed.enabled": False,
                                     "validate.benchmark": "pope", "validate.folder": str(pope),
                                     "validate.batch_size": 6}))
    dump(base, tmp_path / "base.yaml")
    (tmp_path / "space.yaml").write_text(f"""
base_config: base.yaml
name: t
target_k: 12
num_samples: 2
max_concurrent_trials: 1
overrides: {{train.max_steps: 4, train.report_every: 2, train.checkpoint_every: 2, validate.every: 2}}
space:
  method.config.lambda_: {{type: choice, values: [0.01, 5.0]}}
  method.config.tau: {{type: choice, values: [1.0]}}
scheduler: {{type: asha, max_t: 2, grace_period: 1, reduction_factor: 2}}
storage_root: sweeps
""")
    space = load_space(tmp_path / "space.yaml")
    out = run(space)
    assert len(out["rows"]) == 2 and all(r["status"] == "OK" for r in out["rows"])
    assert all(r["val_objective"] is not None and r["val_K_mean"] is not None for r in out["rows"])
    best = load(TrainJobConfig, out["best_yaml"])  # ready to train: the base scale, the best values
    assert best.method.config["lambda_"] == out["best_params"]["method.config.lambda_"]
    assert best.train.max_steps == base.train.max_steps and best.validate.target_k == 12
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweeps' / 't' / 'mlflow.db'}")
    exp = client.get_run(out["mlflow_run_id"]).info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{out['mlflow_run_id']}'")
    assert len(children) == 2 and all("val_objective" in c.data.metrics for c in children)
    assert all(c.info.status == "FINISHED" and c.data.tags["tune.iterations"] in ("1", "2") for c in children)
    again = run(space)  # restores the finished sweep: the same trials, nothing re-run
    assert sorted(r["trial"] for r in again["rows"]) == sorted(r["trial"] for r in out["rows"])
    assert again["best_params"] == out["best_params"]
