"""The project's one tracking module: MLflow behind a small interface, so nothing else imports ``mlflow``.

Rank 0 of a training run and the drivers of jobs log through :class:`MlflowTracker`; other ranks and unit tests get
:class:`NullTracker`. The default store is a local sqlite database under the run's storage root (MLflow 3's file
store is in maintenance mode), with the artifacts of its experiments beside it in ``mlartifacts/``; a tracking URI
from the config points at a server instead. A run can be created by
the job driver and re-attached by its training workers (and after a restart) through its run id.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def default_tracking_uri(storage_root: str | Path) -> str:
    """``sqlite:///<abs storage root>/mlflow.db``."""
    root = Path(storage_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def absolute_uri(uri: str | None) -> str | None:
    """A local sqlite URI with its database path resolved against the current directory (``sqlite:///runs/x.db``
    names ``./runs/x.db``); any other URI unchanged. Ray Train workers and Tune trials run in other directories,
    where the relative path would name another (new, empty) store."""
    if not uri or not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a local sqlite store keeps its artifacts: ``<db folder>/mlartifacts`` (absolute),
    so a run's files live beside its database instead of in ``./mlruns`` of whatever directory the process
    happened to start in (MLflow's default). None (the server decides) for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return str(Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts")


def _clean(value: Any) -> Any:
    return str(value) if not isinstance(value, (int, float, str, bool)) or value is None else value


class Tracker(Protocol):
    """What jobs and training loops log through."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Logs nothing (non-zero ranks, tests)."""

    run_id: str | None = None

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def log_text(self, text, artifact_file):
        pass

    def log_dict(self, data, artifact_file):
        pass

    def set_tags(self, tags):
        pass

    def close(self, status="FINISHED"):
        pass

    def last_step(self, key: str) -> int:
        return 0


class MlflowTracker:
    """One MLflow run (created, or re-attached by ``run_id``), optionally nested under ``parent_run_id``.

    Args:
        uri: tracking URI (e.g. from :func:`default_tracking_uri`).
        experiment: experiment name (created if missing).
        run_name: display name of a new run.
        run_id: attach to this existing run instead of creating one.
        parent_run_id: make the new run a child of this run (nested runs: sweeps, evaluation matrices).
        tags: tags of a new run.
    """

    def __init__(self, uri: str, experiment: str = "stepprune", run_name: str | None = None,
                 run_id: str | None = None, parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self._create_experiment(experiment)
            all_tags = {k: str(v) for k, v in (tags or {}).items()}
            if parent_run_id:
                all_tags["mlflow.parentRunId"] = parent_run_id
            run = self.client.create_run(exp_id, run_name=run_name, tags=all_tags)
            run_id = run.info.run_id
        self.run_id = run_id

    def _create_experiment(self, name: str) -> str:
        root = artifact_root(self.uri)
        try:
            return self.client.create_experiment(name, artifact_location=None if root is None else f"{root}/{name}")
        except Exception:  # another process created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(_clean(v))[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i: i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i: i + 500])

    def last_step(self, key: str) -> int:
        """The largest step logged for metric ``key`` (0 when none)."""
        history = self.client.get_metric_history(self.run_id, key)
        return max((m.step for m in history), default=0)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


CODE_FOLDERS = ("stepprune", "pipeline", "jobs", "tune_spaces")


def code_version() -> str:
    """The git commit of the code that runs, ``+dirty`` when any of ``CODE_FOLDERS`` has local changes (a run's
    config and glue matter as much as the library, which ``stepprune.checkpoint.code_version`` looks at by default),
    or the package version outside a git checkout."""
    from stepprune.checkpoint import code_version as _version

    return _version(Path(__file__).resolve().parents[1], CODE_FOLDERS)


def log_provenance(tracker: Tracker, seconds: float | None = None) -> None:
    """Records how a run was produced: the exact command line, the code version and (at the end) its wall time."""
    import shlex
    import sys

    tracker.set_tags({"command": " ".join(shlex.quote(a) for a in sys.argv) or "(library call)",
                      "code_version": code_version()})
    if seconds is not None:
        tracker.log_metrics({"wall_seconds": float(seconds)})


def histogram_png(values: Sequence[float], path: str | Path, title: str, xlabel: str, bins: int = 30) -> Path:
    """Writes a histogram PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.hist(list(values), bins=bins, color="#3b6ea8")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def log_histogram(tracker: Tracker, values: Sequence[float], artifact_file: str, title: str, xlabel: str) -> None:
    """Logs a histogram of ``values`` as a PNG artifact (e.g. the K histogram)."""
    if isinstance(tracker, NullTracker):
        return
    with tempfile.TemporaryDirectory() as tmp:
        png = histogram_png(values, Path(tmp) / Path(artifact_file).name, title, xlabel)
        folder = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        tracker.log_artifact(png, folder)
