"""The training job end to end on CPU: Ray Train + DeepSpeed ZeRO-2 over gloo, checkpoints, a killed worker,
resume, and MLflow. Slow: each fit starts two Ray Train workers and DeepSpeed."""

import json

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import TrainJobConfig
from pipeline.config_loader import load
from tests.pipeline.train_fixtures import train_overrides

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_killed_worker_resumes_from_its_last_checkpoint(ray_session, tmp_path, tiny_llava_dir):
    from pipeline.train_job import run

    # Half a CPU per worker: on this 4-CPU test cluster the killed attempt's placement group can still hold its
    # CPUs while the restarted group reserves its own; whole CPUs would leave none for Ray Data's encode tasks
    # (seen once on a loaded machine: 4.0 CPU reserved in placement groups, a CPU task pending, a hang).
    cfg = load(TrainJobConfig, "jobs/configs/embedded.yaml",
               train_overrides(tmp_path, tiny_llava_dir, **{"train.fail_at_step": 3, "train.fail_rank": 1,
                                                            "scaling.cpus_per_worker": 0.5}))
    summary = run(cfg)
    run_dir = tmp_path / "runs" / "t"
    assert (run_dir / "_fault_injected").exists()  # rank 1 really died once (SIGKILL) at step 3
    assert summary.steps == 6
    client = MlflowClient(summary.tracking_uri)
    steps = [m.step for m in client.get_metric_history(summary.mlflow_run_id, "lm_loss")]
    assert steps == [1, 2, 3, 4, 5, 6]  # every completed step logged exactly once: none lost, none repeated
    selector = run_dir / "final" / "selector"
    meta = json.loads((selector / "meta.json").read_text())
    assert meta["step"] == 6 and (selector / "selector.safetensors").exists()
    arts = {a.path for a in client.list_artifacts(summary.mlflow_run_id)}
    assert {"selector", "config"} <= arts
    assert any(a.path.startswith("plots/k_hist") for a in client.list_artifacts(summary.mlflow_run_id, "plots"))


def test_rerunning_a_finished_run_name_resumes_instead_of_restarting(ray_session, tmp_path, tiny_llava_dir):
    from pipeline.train_job import run

    over = train_overrides(tmp_path, tiny_llava_dir, **{"train.max_steps": 2, "scaling.num_workers": 1,
                                                        "deepspeed.enabled": False,
                                                        "storage.export": str(tmp_path / "exported")})
    first = run(load(TrainJobConfig, "jobs/configs/embedded.yaml", over))
    more = run(load(TrainJobConfig, "jobs/configs/embedded.yaml", over + ["train.max_steps=4"]))
    assert first.steps == 2 and more.steps == 4
    assert first.mlflow_run_id == more.mlflow_run_id
    meta = (tmp_path / "exported" / "meta.json").read_text()  # the export follows the latest final selector
    assert '"step": 4' in meta
    steps = [m.step for m in MlflowClient(more.tracking_uri).get_metric_history(more.mlflow_run_id, "lm_loss")]
    assert steps == [1, 2, 3, 4]


def test_the_warm_start_stage_runs_before_the_fit_and_once_per_run_name(ray_session, tmp_path, tiny_llava_dir,
                                                                        synthvqa_test_folder):
    from stepprune.checkpoint import load_checkpoint

    from pipeline.train_job import run

    over = train_overrides(tmp_path, tiny_llava_dir, **{
        "train.max_steps": 1, "scaling.num_workers": 1, "deepspeed.enabled": False,
        "train.warm_start.folder": str(synthvqa_test_folder), "train.warm_start.steps": 2,
        "train.warm_start.batch_size": 2, "train.warm_start.teacher_k": 4, "train.warm_start.items": 8})
    first = run(load(TrainJobConfig, "jobs/configs/embedded.yaml", over))
    warm = tmp_path / "runs" / "t" / "warm_start" / "selector"
    assert (warm / "selector.safetensors").is_file()
    stamp = (warm / "selector.safetensors").stat().st_mtime_ns
    client = MlflowClient(first.tracking_uri)
    assert [m.step for m in client.get_metric_history(first.mlflow_run_id, "warm_start.L_ev")] == [2]
    # the fit started from the warm start: one AdamW step at lr <= 1e-3 moves each weight by about lr at most,
    # while an initialisation of its own would differ by the init scale (running statistics aside)
    started, trained = load_checkpoint(warm).state_dict(), load_checkpoint(first.selector_dir).state_dict()
    assert trained.keys() == started.keys()
    weights = [k for k in started if started[k].is_floating_point() and not k.endswith(("mean_square", "value"))]
    assert weights and max(float((trained[k] - started[k]).abs().max()) for k in weights) < 3e-3
    more = run(load(TrainJobConfig, "jobs/configs/embedded.yaml", over + ["train.max_steps=2"]))
    assert more.steps == 2 and (warm / "selector.safetensors").stat().st_mtime_ns == stamp  # not trained again
