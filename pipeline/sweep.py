"""Hyper-parameter sweeps with Ray Tune: every trial is a full Ray Train run of the training pipeline.

Ray Train V2 pattern: each trial is a Tune *driver function* that fits the same ``TorchTrainer`` as
``jobs/train.py`` (:func:`pipeline.train_job.fit`), named after the trial id (no timestamps), with a
``TuneReportCallback`` that forwards the training loop's reports (including its periodic validation metrics)
to Tune, where ASHA stops poor trials early. Re-running a sweep under the same name restores it
(``Tuner.restore``), and each interrupted trial resumes its own Train run from its checkpoint.

MLflow: one parent run per sweep, one nested run per trial (the trial's training run). At the end, the best
trial's values are written as a ready-to-use training YAML: the base config with the best values applied and
without the reduced-scale trial overrides.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import ray
from ray import tune

from pipeline.config import TrainJobConfig
from pipeline.config_loader import config_hash, dump, flatten, from_dict, load, to_dict
from pipeline.tracking import MlflowTracker, absolute_uri, default_tracking_uri, log_provenance
from pipeline.tune_space import (TRIAL_DRIVER_CPU, TuneSpace, as_overrides, derived_concurrency,
                                 setting_overrides, trial_overrides)


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    """Runs the block in `path` and returns to the previous directory (the trial's own)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _trial(config: dict[str, Any]) -> None:
    """Tune driver function of one trial: a full training run, reporting through TuneReportCallback."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.train_job import absolutize, fit, open_run

    space = from_dict(TuneSpace, config["space"])
    params = config["params"]
    trial_id = tune.get_context().get_trial_id()
    overrides = trial_overrides(space, params) + list(config.get("shared_overrides", ())) + [
        f"storage.root={config['trials_root']}", f"storage.name=trial_{trial_id}",
        f"tracking.experiment={space.tracking.experiment}", "eval.enabled=false"]
    if config.get("tracking_uri"):
        overrides.append(f"tracking.uri={config['tracking_uri']}")
    # Tune runs a trial in its own trial directory, so the space's relative paths (the base config, the data,
    # the backbone: relative to where the sweep was started) are resolved against the driver's directory.
    with _working_dir(config["driver_cwd"]):
        cfg = absolutize(load(TrainJobConfig, space.base_config, overrides))
    tracker, uri = open_run(cfg, parent_run_id=config["parent_run_id"])
    tracker.set_tags({"trial_id": trial_id, **{f"param.{k}": v for k, v in params.items()}})
    result = fit(cfg, tracker, uri, callbacks=(TuneReportCallback(),))
    tracker.close("FAILED" if result.error is not None else "FINISHED")
    if result.error is not None:
        raise result.error


def shared_warm_start(base: TrainJobConfig, root: Path) -> list[str]:
    """Trains the base config's warm start (``train.warm_start``) once for the whole sweep; returns the overrides
    that start every trial from it (none when the base config has no warm start).

    :func:`pipeline.tune_space.validate_space` has checked that no sampled key changes what the warm start trains,
    so each trial is the run its config describes, minus 7 minutes (the embedded warm start on 2 cores). The
    folder is named by a hash of what the warm start reads (backbone, method, its own section, seed): a re-run
    sweep reuses it, and a sweep whose fixed overrides changed any of those trains a new one.
    """
    if base.train.warm_start is None:
        return []
    from pipeline.evidence_warm_start import run_stage

    key = config_hash({"backbone": to_dict(base.backbone), "method": to_dict(base.method),
                       "warm_start": to_dict(base.train.warm_start), "seed": base.train.seed})
    started = run_stage(base, root / f"warm_start_{key}", log=lambda line: print(line, flush=True))
    return ["train.warm_start=null", f"train.init_selector={started.train.init_selector}"]


def _best_yaml(space: TuneSpace, params: dict[str, Any], path: Path) -> TrainJobConfig:
    """Writes the base training config with the space's setting, the best values and the operating point's
    validation target (not the trials' reduced-scale overrides)."""
    over = setting_overrides(space) + as_overrides(params)
    if space.target_k is not None:
        over.append(f"validate.target_k={space.target_k}")
    cfg = load(TrainJobConfig, space.base_config, over)
    dump(cfg, path)
    return cfg


def run(space: TuneSpace) -> dict[str, Any]:
    """Runs (or restores) the sweep; returns the trial table, the best values and the written YAML path."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from pipeline.train_job import absolutize, ensure_data

    t0 = time.perf_counter()
    root = Path(space.storage_root).resolve() / space.name
    root.mkdir(parents=True, exist_ok=True)
    base = absolutize(load(TrainJobConfig, space.base_config, trial_overrides(space, {})))
    ensure_data(base)  # once, shared by every trial
    shared = shared_warm_start(base, root)
    uri = absolute_uri(space.tracking.uri) or default_tracking_uri(root)  # trials run in their own directories
    parent_file = root / "mlflow_parent_run_id"
    parent = (MlflowTracker(uri, run_id=parent_file.read_text().strip()) if parent_file.exists() else
              MlflowTracker(uri, space.tracking.experiment, run_name=space.name, tags={"job": "sweep"}))
    parent_file.write_text(parent.run_id)
    parent.log_params(flatten(space))

    scheduler = (ASHAScheduler(max_t=space.scheduler.max_t, grace_period=space.scheduler.grace_period,
                               reduction_factor=space.scheduler.reduction_factor)
                 if space.scheduler.type == "asha" else FIFOScheduler())
    concurrency = derived_concurrency(space, base, ray.cluster_resources())
    param_space = {
        "params": {k: d.to_tune() for k, d in space.space.items()},
        "space": {**to_dict(space), "space": {}},
        "trials_root": str(root / "trials"),
        "parent_run_id": parent.run_id,
        "tracking_uri": uri,
        "driver_cwd": os.getcwd(),
        "shared_overrides": shared,
    }
    trainable = tune.with_resources(_trial, {"cpu": TRIAL_DRIVER_CPU})
    exp_dir = root / "tune" / space.name
    if tune.Tuner.can_restore(str(exp_dir)):
        print(f"[sweep] restoring {exp_dir}", flush=True)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, param_space=param_space,
                                   resume_errored=True, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric=space.metric, mode=space.mode, scheduler=scheduler,
                                        search_alg=search_for(space, concurrency),
                                        num_samples=space.num_samples),
            run_config=tune.RunConfig(name=space.name, storage_path=str(root / "tune"), verbose=1),
        )
    results = list(tuner.fit())
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({"trial": _trial_id(r) or "?", **r.config.get("params", {}),
                     space.metric: m.get(space.metric), "val_accuracy": m.get("val_accuracy"),
                     "val_K_mean": m.get("val_K_mean"), "iterations": m.get("training_iteration"),
                     "status": "ERROR" if r.error else "OK"})
    close_trial_runs(parent, results, space.scheduler.max_t if space.scheduler.type == "asha" else None)
    best = pick_best(results, space.metric, space.mode)
    best_params = best.config["params"]
    best_yaml = root / "best_train.yaml"
    _best_yaml(space, best_params, best_yaml)
    table = render_table(rows, space.metric)
    (root / "trials.md").write_text(table)
    parent.log_text(table, "trials.md")
    parent.log_artifact(best_yaml, "best")
    parent.log_metrics({f"best.{k}": float(v) for k, v in (best.metrics or {}).items()
                        if k in (space.metric, "val_accuracy", "val_K_mean") and v is not None})
    parent.log_dict({"best_params": best_params}, "best_params.json")
    log_provenance(parent, time.perf_counter() - t0)
    parent.close()
    return {"rows": rows, "best_params": best_params, "best_metrics": best.metrics, "best_yaml": str(best_yaml),
            "table": table, "mlflow_run_id": parent.run_id, "seconds": time.perf_counter() - t0,
            "concurrency": concurrency}


def search_for(space: TuneSpace, max_concurrent: int = 0) -> Any:
    """Random search over the space, seeded by the space's seed (the same file draws the same trials), running at
    most ``max_concurrent`` trials at once (0: no limit).

    The limit must be given here: Tune ignores ``TuneConfig.max_concurrent_trials`` when the search algorithm is a
    ``BasicVariantGenerator`` passed in (a warning, not an error), and on a 2-core machine three trials then start
    at once and two fail waiting 60 s for their training worker's CPUs.
    """
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=space.seed, max_concurrent=max_concurrent)


def close_trial_runs(parent: MlflowTracker, results: list[Any], max_t: int | None) -> None:
    """Marks each trial's nested MLflow run FINISHED (or FAILED) with how far it went.

    A trial that ASHA stops (early, or at `max_t`) is ended by Tune inside its training loop, so the trial
    function never reaches its own `close`; the driver, which sees every trial's outcome, closes them instead.
    """
    exp = parent.client.get_run(parent.run_id).info.experiment_id
    runs = parent.client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.run_id}'", max_results=10000)
    by_trial = {r.data.tags.get("trial_id"): r for r in runs}
    for res in results:
        run = by_trial.get(_trial_id(res))
        if run is None:
            continue  # the trial failed before its run was opened
        iterations = int((res.metrics or {}).get("training_iteration") or 0)
        parent.client.set_tag(run.info.run_id, "tune.iterations", str(iterations))
        if max_t is not None:
            parent.client.set_tag(run.info.run_id, "tune.stopped_early", str(iterations < max_t).lower())
        parent.client.set_terminated(run.info.run_id, status="FAILED" if res.error else "FINISHED")


def _trial_id(result: Any) -> str | None:
    """A trial's id as Tune reports it (the name its nested MLflow run is tagged with); the trial directory's
    name for a trial that never reported."""
    return (result.metrics or {}).get("trial_id") or (Path(result.path).name if result.path else None)


def pick_best(results: list[Any], metric: str, mode: str) -> Any:
    """The result with the best last reported `metric`; ties go to the lowest trial id.

    Tune's own `get_best_result` keeps the first of equal results in the grid's order, and that order differs
    between a fresh run and a restore, so a tie (common in short sweeps) would name a different winner on
    re-run. Results without a finite metric are skipped; none left is an error naming the metric.
    """
    sign = 1.0 if mode == "max" else -1.0
    scored = []
    for r in results:
        v = (r.metrics or {}).get(metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            scored.append((-sign * float(v), _trial_id(r) or "", r))
    if not scored:
        raise ValueError(f"sweep: no trial reported a finite '{metric}'; see the trial table for errors")
    return min(scored, key=lambda t: (t[0], t[1]))[2]


def render_table(rows: list[dict[str, Any]], metric: str) -> str:
    """The trial table as Markdown, best first."""
    if not rows:
        return "(no trials)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    order = sorted(rows, key=lambda r: -(r.get(metric) if isinstance(r.get(metric), (int, float)) else -1e9))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in order]
    return "\n".join(lines) + "\n"
