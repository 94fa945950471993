"""The training job's driver: data, MLflow run, ``TorchTrainer`` fit, held-out check, summary.

``run(cfg)`` does, in order:
1. connect to Ray (or start it locally);
2. make sure the data exists: generate SynthVQA when configured and missing, pack the Parquet shards when missing;
3. create (or, for a resumed run name, re-attach) the MLflow run and log the flattened config;
4. with ``train.warm_start``, train the label-free warm start in this process (once per run name); then
   fit a ``TorchTrainer`` running :func:`pipeline.train_loop.train_loop_per_worker` with ``FailureConfig`` and
   ``CheckpointConfig``; re-running under the same ``storage.name`` resumes from its latest checkpoint;
5. log the final selector and the config as artifacts, run the held-out check, print and return the summary.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train import ScalingConfig as RayScaling
from ray.train.torch import TorchTrainer

from pipeline.cluster import init_ray
from pipeline.config import TrainJobConfig
from pipeline.config_loader import ConfigError, config_hash, dump, flatten, to_dict
from pipeline.data import RecordGuard, prepare_shards, training_dataset
from pipeline.tracking import MlflowTracker, absolute_uri, default_tracking_uri, log_provenance
from pipeline.train_loop import train_loop_per_worker
from pipeline.worker_env import apply_worker_env


@dataclasses.dataclass
class TrainSummary:
    """What the job prints at the end."""

    run_name: str
    mlflow_run_id: str
    tracking_uri: str
    steps: int
    final_metrics: dict[str, Any]
    selector_dir: str
    heldout: list[dict[str, Any]]
    seconds: float
    gap: dict[str, dict[str, float]] | None = None

    def render(self) -> str:
        m = self.final_metrics
        lines = [
            f"run {self.run_name}: {self.steps} steps in {self.seconds / 60:.1f} min",
            "final: " + ", ".join(f"{k}={m[k]:.4g}" for k in ("loss", "lm_loss", "aux_loss", "K_mean", "K_std")
                                  if isinstance(m.get(k), (int, float))),
            f"selector checkpoint: {self.selector_dir}",
        ]
        if self.heldout:
            lines.append("held-out accuracy (same items; evidence recall: the share of each question's evidence "
                         "patches kept, where random's is chance; distractors: the share of the kept tokens on what "
                         "other questions about the image ask about, which costs accuracy on the tiny backbone):")
            for r in self.heldout:
                recall, distractors = r.get("token_recall"), r.get("distractor_share")
                lines.append(f"  {r['method']:<28} acc={r['accuracy']:.4f}  mean kept tokens={r['mean_kept']:.1f}"
                             + ("" if recall is None else f"  evidence recall={100 * recall:.1f}%")
                             + ("" if distractors is None else f"  distractors={100 * distractors:.1f}%"))
        if self.gap:
            from stepprune.train_gap import render

            lines.append("train/inference gap: answer NLL on held-out questions (lower is better; 'selection' is "
                         "what deployment gets, 'train_path' what training optimised, 'evidence' an oracle "
                         "selection of the same size):")
            lines.extend("  " + line for line in render(self.gap).splitlines())
        lines.append(f"MLflow run {self.mlflow_run_id} at {self.tracking_uri}")
        return "\n".join(lines)


def absolutize(cfg: TrainJobConfig) -> TrainJobConfig:
    """Resolves every path against the current directory (workers may run elsewhere)."""
    a = lambda p: str(Path(p).resolve()) if p else p  # noqa: E731
    return dataclasses.replace(
        cfg,
        backbone=dataclasses.replace(cfg.backbone, path=a(cfg.backbone.path)),
        data=dataclasses.replace(cfg.data, corpus=a(cfg.data.corpus), image_folder=a(cfg.data.image_folder),
                                 shards=a(cfg.data.shards)),
        storage=dataclasses.replace(cfg.storage, root=a(cfg.storage.root), export=a(cfg.storage.export)),
        eval=dataclasses.replace(cfg.eval, folder=a(cfg.eval.folder)),
        validate=dataclasses.replace(cfg.validate, folder=a(cfg.validate.folder)),
        train=dataclasses.replace(cfg.train, init_selector=a(cfg.train.init_selector),
                                  warm_start=cfg.train.warm_start and dataclasses.replace(
                                      cfg.train.warm_start, folder=a(cfg.train.warm_start.folder))),
        tracking=dataclasses.replace(cfg.tracking, uri=absolute_uri(cfg.tracking.uri)),
    )


def generate_data(cfg: TrainJobConfig) -> None:
    """Generates SynthVQA when configured and missing (no Ray)."""
    d = cfg.data
    corpus = Path(d.corpus)
    if not corpus.exists() and d.synthvqa is not None:
        from stepprune.data.synthvqa import SynthVQAConfig, generate_synthvqa

        root = corpus.parent.parent
        print(f"[data] generating SynthVQA into {root} (seed {d.synthvqa.seed})", flush=True)
        t0 = time.perf_counter()
        generate_synthvqa(root, SynthVQAConfig(seed=d.synthvqa.seed, n_train_images=d.synthvqa.n_train_images,
                                               n_val_images=d.synthvqa.n_val_images,
                                               n_test_images=d.synthvqa.n_test_images))
        print(f"[data] generated in {time.perf_counter() - t0:.0f} s", flush=True)


def ensure_data(cfg: TrainJobConfig) -> dict[str, Any]:
    """Generates SynthVQA (when configured and missing) and packs the shards with Ray Data (when missing or stale)."""
    generate_data(cfg)
    d = cfg.data
    corpus = Path(d.corpus)
    manifest_file = Path(d.shards) / "_manifest.json"
    # "order" re-packs shards written before they kept a deterministic (seeded) order, and those whose files Ray
    # wrote in task-completion order rather than by position.
    stamp = {"corpus": str(corpus), "max_samples": d.max_samples,
             "corpus_mtime": corpus.stat().st_mtime if corpus.exists() else None,
             "order": f"shuffled:{d.shuffle_seed}/by-position",
             **({"split_turns": True} if d.split_turns else {})}  # shards packed before the option stay valid
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("stamp") == stamp:
            return manifest
    print(f"[data] packing {corpus} into Parquet shards at {d.shards}", flush=True)
    manifest = prepare_shards(corpus, d.image_folder, d.shards, max_bad_records=d.max_bad_records,
                              max_samples=d.max_samples, rows_per_shard=d.rows_per_shard,
                              shuffle_seed=d.shuffle_seed, split_turns=d.split_turns)
    manifest["stamp"] = stamp
    manifest_file.write_text(json.dumps(manifest, indent=2))
    return manifest


def _mlflow_run(cfg: TrainJobConfig, run_dir: Path, uri: str, parent_run_id: str | None = None) -> MlflowTracker:
    """Creates the run (nested under ``parent_run_id`` for sweep trials), or re-attaches to the one this run name
    created before (resume)."""
    id_file = run_dir / "mlflow_run_id"
    if id_file.exists():
        return MlflowTracker(uri, run_id=id_file.read_text().strip())
    tracker = MlflowTracker(uri, cfg.tracking.experiment, run_name=cfg.tracking.run_name or cfg.storage.name,
                            parent_run_id=parent_run_id,
                            tags={"job": "train", "method": cfg.method.name, "config_hash": config_hash(cfg)})
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(tracker.run_id)
    return tracker


def fit(cfg: TrainJobConfig, tracker: MlflowTracker, uri: str, callbacks: tuple = ()):
    """Builds and fits the ``TorchTrainer`` of an (absolutized, data-ready) config. Returns Ray's ``Result``,
    with ``bad_records`` (training-time rows skipped) attached.

    Re-fitting under the same ``storage.name`` resumes from that run's latest checkpoint. With
    ``train.warm_start`` the warm start is trained first (once per run name) and the fit starts from it.
    """
    run_dir = Path(cfg.storage.root) / cfg.storage.name
    cfg = warm_start_stage(cfg, run_dir, tracker)  # every fit (the job's, a sweep trial's) starts from it
    guard_name = f"record-guard-{cfg.storage.name}"
    # Held until the fit returns: a named actor without a live handle is garbage-collected.
    guard = RecordGuard.options(name=guard_name, get_if_exists=True).remote(cfg.data.max_bad_records)
    dataset = training_dataset(cfg.data.shards, cfg.backbone.path, batch_size=cfg.data.preprocess_batch_size,
                               guard_name=guard_name, seed=cfg.data.shuffle_seed)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": to_dict(cfg), "mlflow": {"uri": uri, "run_id": tracker.run_id},
                           "storage_dir": str(run_dir)},
        scaling_config=RayScaling(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                  resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=RunConfig(
            name=cfg.storage.name,
            storage_path=str(Path(cfg.storage.root) / "ray"),
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.num_to_keep),
            callbacks=list(callbacks),
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    result.bad_records = ray.get(guard.count.remote())  # rows skipped while decoding/tokenising in training
    return result


# What may differ between a run and its resumption: how long and how often, the fault injection of the tests, where
# results are copied and logged, and the held-out check after training. Anything else would continue a run under
# a config that did not train its checkpoint (and MLflow keeps a run's first parameter values).
RESUMABLE_CHANGES = ("train.max_steps", "train.report_every", "train.checkpoint_every", "train.num_to_keep",
                     "train.threads_per_worker", "train.fail_at_step", "train.fail_rank", "scaling.", "storage.export",
                     "tracking.", "ray.", "eval.", "validate.")


def check_resumable(cfg: TrainJobConfig, run_dir: Path) -> None:
    """Refuses to resume ``run_dir`` (a run name trained before) under a config that differs from the one it was
    trained with, except in :data:`RESUMABLE_CHANGES`. A key the saved config lacks (written by an older version)
    counts as null.

    Raises:
        ConfigError: naming the run folder, the differing keys with both values, and the two ways out.
    """
    saved_file = run_dir / "config.yaml"
    if not saved_file.exists():
        return
    old = flatten(yaml.safe_load(saved_file.read_text()) or {})
    new = flatten(to_dict(cfg))
    differ = sorted(k for k in set(old) | set(new)
                    if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if differ:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
        more = f" (and {len(differ) - 8} more)" if len(differ) > 8 else ""
        raise ConfigError(f"{run_dir} holds a run trained with another config ({shown}{more}); re-running a run name "
                         f"resumes it. Use another storage.name, or delete {run_dir} and "
                         f"{Path(cfg.storage.root) / 'ray' / cfg.storage.name} to start it again.")


def open_run(cfg: TrainJobConfig, parent_run_id: str | None = None) -> tuple[MlflowTracker, str]:
    """The job's MLflow run (created, or re-attached for a resumed run name), with the config logged."""
    run_dir = Path(cfg.storage.root) / cfg.storage.name
    check_resumable(cfg, run_dir)
    uri = cfg.tracking.uri or default_tracking_uri(cfg.storage.root)
    tracker = _mlflow_run(cfg, run_dir, uri, parent_run_id)
    tracker.log_params(flatten(cfg))
    dump(cfg, run_dir / "config.yaml")
    tracker.log_artifact(run_dir / "config.yaml", "config")
    return tracker, uri


def run(cfg: TrainJobConfig) -> TrainSummary:
    """Runs the whole job and returns its summary."""
    t0 = time.perf_counter()
    cfg = absolutize(cfg)
    run_dir = Path(cfg.storage.root) / cfg.storage.name
    # The Ray-free parts run before a local Ray starts and after it stops: on 2 cores its idle daemons (raylet, GCS,
    # dashboard) take CPU from a single-process step (20 warm-start steps: 1.53 s each without Ray, 1.72 s with it,
    # 1.89 s with its dashboard too; over a whole run this machine's own drift, +-40 s on the warm start, hides most).
    apply_worker_env(cfg.scaling.use_gpu)  # offline, no telemetry: as for the workers, from the first step on
    generate_data(cfg)
    tracker, uri = open_run(cfg)
    cfg = warm_start_stage(cfg, run_dir, tracker)
    started = init_ray(cfg.ray, cfg.scaling.use_gpu)
    manifest = ensure_data(cfg)
    tracker.log_metrics({"data.records": manifest["records"], "data.bad_records": len(manifest["bad"])})
    result = fit(cfg, tracker, uri)
    if result.error is not None:
        tracker.close("FAILED")
        raise result.error
    metrics = dict(result.metrics or {})
    bad_at_train = result.bad_records
    selector_dir = ""
    heldout: list[dict[str, Any]] = []
    gap = None
    if result.checkpoint is not None:
        selector_dir = str(export_selector(result.checkpoint, run_dir / "final"))
        tracker.log_artifact(selector_dir, "selector")
        if cfg.storage.export:
            import shutil

            shutil.rmtree(cfg.storage.export, ignore_errors=True)
            shutil.copytree(selector_dir, cfg.storage.export)
            tracker.set_tags({"exported_to": cfg.storage.export})
    if started:  # the held-out checks below run in this process; a cluster we only connected to stays up
        ray.shutdown()
    if result.checkpoint is not None:
        if cfg.eval.enabled:
            heldout = heldout_check(cfg, selector_dir, tracker)
            if cfg.eval.gap_items:
                gap = gap_check(cfg, selector_dir, tracker, int(metrics.get("step", cfg.train.max_steps)))
    tracker.log_metrics({"data.bad_records_at_train": bad_at_train})
    log_provenance(tracker, time.perf_counter() - t0)
    tracker.close()
    return TrainSummary(cfg.storage.name, tracker.run_id, uri, int(metrics.get("step", 0)), metrics, selector_dir,
                        heldout, time.perf_counter() - t0, gap)


def warm_start_stage(cfg: TrainJobConfig, run_dir: Path, tracker: MlflowTracker) -> TrainJobConfig:
    """``train.warm_start``: the label-free warm start, trained once in this process before the fit
    (:func:`pipeline.evidence_warm_start.run_stage`), its L_ev and teacher recall logged as ``warm_start.*``."""
    if cfg.train.warm_start is None:
        return cfg
    from pipeline.evidence_warm_start import run_stage

    t0 = time.perf_counter()
    out = run_stage(cfg, run_dir, log=lambda line: print(line, flush=True),
                    on_metrics=lambda step, m: tracker.log_metrics({f"warm_start.{k}": v for k, v in m.items()},
                                                                  step=step))
    tracker.log_metrics({"warm_start.seconds": time.perf_counter() - t0})
    return out


def gap_check(cfg: TrainJobConfig, selector_dir: str, tracker: MlflowTracker,
              steps: int) -> dict[str, dict[str, float]] | None:
    """The train/inference gap of the trained selector (``pipeline.heldout.train_gap``), logged to MLflow as
    ``gap.<family>.<condition>`` and ``gap.json``. Only for methods that select before the LLM: a decode-time
    method (DyRate) keeps every token at prefill, so teacher-forced NLL says nothing about its pruning."""
    import stepprune
    from pipeline.heldout import train_gap
    from stepprune.checkpoint import load_checkpoint

    adapter = stepprune.load_backbone(cfg.backbone.path)
    method = load_checkpoint(selector_dir, adapter)
    if method.hook_point != "pre_llm":
        return None
    gap = train_gap(adapter, method, cfg.eval.folder, step=max(steps - 1, 0), max_items=cfg.eval.gap_items)
    tracker.log_metrics({f"gap.{fam}.{k}": v for fam, row in gap.items() for k, v in row.items()})
    tracker.log_dict({"gap": gap}, "gap.json")
    return gap


def export_selector(checkpoint, folder: Path) -> Path:
    """Copies the selector files of a Ray checkpoint to ``folder/selector`` and returns that path."""
    import shutil

    with checkpoint.as_directory() as d:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(Path(d) / "selector", folder / "selector")
    return folder / "selector"


def heldout_check(cfg: TrainJobConfig, selector_dir: str, tracker: MlflowTracker) -> list[dict[str, Any]]:
    """Trained selector vs vanilla vs random pruning at the trained selector's mean K, on held-out items; on SynthVQA
    (a ``questions.jsonl`` with evidence in the folder) also the evidence oracle at that K, the ceiling a selector
    could reach, and its question-agnostic variant, the image's evidence whatever the question: what a selector that
    does not read the question can at best learn (:mod:`stepprune.methods.evidence_oracle`)."""
    import stepprune
    from pipeline.heldout import evaluate_methods
    from stepprune.checkpoint import load_checkpoint
    from stepprune.methods.evidence_oracle import EvidenceConfig, EvidenceOracle, read_evidence

    adapter = stepprune.load_backbone(cfg.backbone.path)
    trained = load_checkpoint(selector_dir, adapter)
    questions = Path(cfg.eval.folder) / "questions.jsonl"
    image_evidence = read_evidence(questions, scope="image") if questions.is_file() else None
    kw = dict(max_items=cfg.eval.max_items, batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
              image_evidence=image_evidence)
    first = evaluate_methods(adapter, [(f"{cfg.method.name} (trained)", trained),
                                       ("vanilla", stepprune.build_method("vanilla"))], cfg.eval.folder, **kw)
    k = max(1, round(first[0].mean_kept))
    controls = [(f"random (budget {k})", stepprune.build_method("random", budget=k))]
    if image_evidence is not None:
        controls += [(f"evidence oracle (budget {k})",
                      EvidenceOracle(EvidenceConfig(budget=k, questions=str(questions)))),
                     (f"image-evidence oracle (budget {k})",
                      EvidenceOracle(EvidenceConfig(budget=k, questions=str(questions), scope="image")))]
    rand = evaluate_methods(adapter, controls, cfg.eval.folder, **kw)
    rows = [dataclasses.asdict(r) for r in (*first, *rand)]
    for r in rows:
        name = r["method"].split(" ")[0]
        tracker.log_metrics({f"heldout.{name}.accuracy": r["accuracy"], f"heldout.{name}.mean_kept": r["mean_kept"],
                             **{f"heldout.{name}.{m}": r[m] for m in ("token_recall", "distractor_share")
                                if r[m] is not None}})
        r.pop("kept")
    tracker.log_dict({"heldout": rows}, "heldout.json")
    return rows
