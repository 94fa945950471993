"""MLflow through the one tracking module: a local sqlite store, params, metrics, artifacts, nested runs."""

from mlflow.tracking import MlflowClient

from pipeline.tracking import MlflowTracker, NullTracker, default_tracking_uri, log_histogram


def test_mlflow_run_logs_params_metrics_and_artifacts(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    assert uri.startswith("sqlite:///") and uri.endswith("runs/mlflow.db")
    t = MlflowTracker(uri, "exp", run_name="r1", tags={"job": "test"})
    t.log_params({"optim.lr": 1e-3, "method.name": "stepprune", "data.max_samples": None})
    t.log_metrics({"loss": 2.5, "K_mean": 40.0}, step=1)
    t.log_metrics({"loss": 2.0}, step=2)
    log_histogram(t, [1, 2, 2, 3, 50], "plots/k_hist.png", "K", "kept")
    t.log_text("| a |\n|---|\n| 1 |", "tables/t.md")
    child = MlflowTracker(uri, "exp", run_name="child", parent_run_id=t.run_id)
    child.close()
    t.close()
    c = MlflowClient(uri)
    run = c.get_run(t.run_id)
    assert run.data.params["optim.lr"] == "0.001" and run.data.params["data.max_samples"] == "None"
    assert [m.value for m in c.get_metric_history(t.run_id, "loss")] == [2.5, 2.0]
    arts = {a.path for a in c.list_artifacts(t.run_id, "plots")} | {a.path for a in c.list_artifacts(t.run_id, "tables")}
    assert {"plots/k_hist.png", "tables/t.md"} <= arts
    assert c.get_run(child.run_id).data.tags["mlflow.parentRunId"] == t.run_id
    # Re-attaching by id (a resumed job) logs into the same run.
    MlflowTracker(uri, run_id=t.run_id).log_metrics({"loss": 1.5}, step=3)
    assert len(c.get_metric_history(t.run_id, "loss")) == 3


def test_a_local_store_keeps_artifacts_beside_its_database_not_in_the_working_directory(tmp_path, monkeypatch):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = default_tracking_uri(tmp_path / "runs")
    t = MlflowTracker(uri, "exp", run_name="r1")
    t.log_text("hello", "notes/a.txt")
    t.close()
    assert (tmp_path / "runs" / "mlartifacts" / "exp" / t.run_id / "artifacts" / "notes" / "a.txt").read_text() == "hello"
    assert list(cwd.iterdir()) == []  # MLflow's default would have made ./mlruns here
    assert MlflowClient(uri).get_experiment_by_name("exp").artifact_location.endswith("runs/mlartifacts/exp")


def test_null_tracker_accepts_everything():
    t = NullTracker()
    t.log_params({"a": 1})
    t.log_metrics({"b": 2.0}, step=1)
    log_histogram(t, [1, 2], "x.png", "t", "x")
    t.close()


def test_provenance_records_the_command_code_version_and_wall_time(tmp_path, monkeypatch):
    from pipeline.tracking import log_provenance

    monkeypatch.setattr("sys.argv", ["jobs/train.py", "train.max_steps=3", "name=a b"])
    t = MlflowTracker(default_tracking_uri(tmp_path), "exp")
    log_provenance(t, 12.5)
    run = MlflowClient(t.uri).get_run(t.run_id)
    assert run.data.tags["command"] == "jobs/train.py train.max_steps=3 'name=a b'"
    assert run.data.tags["code_version"] and run.data.metrics["wall_seconds"] == 12.5


def test_a_relative_sqlite_uri_is_resolved_against_the_current_directory(tmp_path, monkeypatch):
    from pipeline.tracking import absolute_uri

    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert absolute_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000" and absolute_uri(None) is None


def test_the_code_version_is_dirty_when_the_glue_changed(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from pipeline import tracking

    REPO = Path(__file__).resolve().parents[2]

    repo = tmp_path / "repo"
    (repo / "pipeline").mkdir(parents=True)
    shutil.copy(tracking.__file__, repo / "pipeline" / "tracking.py")
    (repo / "pipeline" / "__init__.py").write_text("")
    (repo / "tune_spaces").mkdir()
    (repo / "tune_spaces" / "s.yaml").write_text("a: 1\n")
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    probe = "import sys; sys.path.insert(0, sys.argv[1]); from pipeline.tracking import code_version; print(code_version())"
    run = lambda: subprocess.run([sys.executable, "-c", probe, str(repo)], capture_output=True, text=True,  # noqa: E731
                                 check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.strip()
    clean = run()
    assert len(clean) == 40 and "+" not in clean
    (repo / "tune_spaces" / "s.yaml").write_text("a: 2\n")  # not the library: still a different run
    assert run() == clean + "+dirty"
