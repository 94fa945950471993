"""The backbone-pretraining job's driver: MLflow run, ``TorchTrainer`` fit, the ``save_pretrained`` folder,
the measurement and the model card.

``run(cfg)`` does, in order:
1. connect to Ray (or start it locally);
2. create (or, for a resumed ``storage.name``, re-attach) the MLflow run and log the flattened config;
3. fit a one-worker ``TorchTrainer`` running :func:`pipeline.backbone_pretrain.pretrain_loop_per_worker`
   (CPU by default, ``scaling.use_gpu=true`` on a GPU machine); re-running under the same ``storage.name``
   resumes from its latest checkpoint;
4. copy the final ``save_pretrained`` folder to ``cfg.output``;
5. measure ``vanilla`` and ``blind`` on the SynthVQA test split (:mod:`pipeline.backbone_eval`) and write
   ``MODEL_CARD.md`` next to the weights; log both to MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train import ScalingConfig as RayScaling
from ray.train.torch import TorchTrainer

from pipeline.backbone_card import hardware, render_card
from pipeline.backbone_eval import evaluate_backbone, family_table, headline
from pipeline.backbone_pretrain import HF_DIR, pretrain_loop_per_worker
from pipeline.cluster import init_ray
from pipeline.config_loader import config_hash, dump, flatten, to_dict
from pipeline.pretrain_config import PretrainJobConfig
from pipeline.tracking import MlflowTracker, default_tracking_uri

CARD = "MODEL_CARD.md"


def absolutize(cfg: PretrainJobConfig) -> PretrainJobConfig:
    """Resolves every path against the current directory (the worker may run elsewhere)."""
    a = lambda p: str(Path(p).resolve())  # noqa: E731
    return dataclasses.replace(cfg, output=a(cfg.output),
                               storage=dataclasses.replace(cfg.storage, root=a(cfg.storage.root)),
                               eval=dataclasses.replace(cfg.eval, folder=a(cfg.eval.folder)))


def _mlflow_run(cfg: PretrainJobConfig, run_dir: Path, uri: str) -> MlflowTracker:
    """Creates the run, or re-attaches to the one this run name created before (resume)."""
    id_file = run_dir / "mlflow_run_id"
    if id_file.exists():
        return MlflowTracker(uri, run_id=id_file.read_text().strip())
    tracker = MlflowTracker(uri, cfg.tracking.experiment, run_name=cfg.tracking.run_name or cfg.storage.name,
                            tags={"job": "pretrain_backbone", "config_hash": config_hash(cfg)})
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(tracker.run_id)
    return tracker


def _versions() -> str:
    import ray
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}, ray {ray.__version__}"


def run(cfg: PretrainJobConfig, command: str = "python jobs/pretrain_backbone.py",
        config_file: str = "jobs/configs/pretrain_backbone.yaml") -> dict[str, Any]:
    """Runs the whole job; returns its summary (also written to ``<run dir>/summary.json``).

    Args:
        cfg: the resolved config.
        command: the command line, for the model card.
        config_file: the YAML the config came from, for the model card.
    """
    t0 = time.perf_counter()
    cfg = absolutize(cfg)
    init_ray(cfg.ray, cfg.scaling.use_gpu)
    run_dir = Path(cfg.storage.root) / cfg.storage.name
    uri = cfg.tracking.uri or default_tracking_uri(cfg.storage.root)
    tracker = _mlflow_run(cfg, run_dir, uri)
    tracker.log_params(flatten(cfg))
    dump(cfg, run_dir / "config.yaml")
    tracker.log_artifact(run_dir / "config.yaml", "config")

    resources = {"CPU": cfg.scaling.cpus_per_worker}
    trainer = TorchTrainer(
        pretrain_loop_per_worker,
        train_loop_config={"job": to_dict(cfg), "mlflow": {"uri": uri, "run_id": tracker.run_id}},
        scaling_config=RayScaling(num_workers=1, use_gpu=cfg.scaling.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.storage.name,
            storage_path=str(Path(cfg.storage.root) / "ray"),
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.loop.num_to_keep),
        ),
    )
    result = trainer.fit()
    if result.error is not None or result.checkpoint is None:
        tracker.close("FAILED")
        raise result.error or RuntimeError("pretraining reported no final checkpoint")
    metrics = dict(result.metrics or {})
    out = Path(cfg.output)
    with result.checkpoint.as_directory() as d:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(Path(d) / HF_DIR, out)
    train_seconds = float(metrics.get("train_seconds", time.perf_counter() - t0))
    print(f"[pretrain] backbone written to {out} ({train_seconds / 60:.1f} min of training)", flush=True)

    report = None
    if cfg.evaluate:
        report = evaluate_backbone(out, cfg.eval, progress=lambda m, d, n: print(
            f"[eval] {m} {d}/{n}", flush=True) if d % (20 * cfg.eval.batch_size) == 0 or d == n else None)
        tracker.log_metrics({f"test.{k}": v for k, v in headline(report).items()})
        (run_dir / "test_report.json").write_text(json.dumps(report, indent=2))
        tracker.log_artifact(run_dir / "test_report.json", "eval")
        print(family_table(report), flush=True)

    from transformers import AutoConfig

    import stepprune
    from stepprune.backbones.pretrain.spec import parameter_counts

    adapter = stepprune.load_backbone(out)
    val = {k: v for k, v in metrics.items() if k.startswith("val.")}
    last_val = _last_val(tracker, run_dir) or val
    facts = {
        "command": command,
        "config": config_file,
        "config_hash": config_hash(cfg),
        "params": parameter_counts(adapter.model),
        "vocab": AutoConfig.from_pretrained(out).text_config.vocab_size,
        "safetensors_mb": (out / "model.safetensors").stat().st_size / 1e6,
        "train_seconds": train_seconds,
        "job_seconds": time.perf_counter() - t0,
        "hardware": hardware(),
        "versions": _versions(),
        "val": last_val,
        "report": report,
        "eval_command": f"python jobs/evaluate_backbone.py backbone={_rel(out)}",
        "mlflow": {"uri": uri, "run_id": tracker.run_id},
    }
    (out / CARD).write_text(render_card(cfg, facts))
    tracker.log_artifact(out / CARD, "card")
    tracker.log_metrics({"job_seconds": facts["job_seconds"], "safetensors_mb": facts["safetensors_mb"]})
    tracker.close()
    summary = {"output": str(out), "train_seconds": train_seconds, "job_seconds": facts["job_seconds"],
               "params": facts["params"]["total"], "safetensors_mb": facts["safetensors_mb"],
               "mlflow_run_id": tracker.run_id, "tracking_uri": uri,
               "overall": {m: r["aggregate"]["overall"] for m, r in report["results"].items()} if report else None}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _last_val(tracker: MlflowTracker, run_dir: Path) -> dict[str, float]:
    """The latest ``val.*`` metrics logged by the worker (its final report carries none)."""
    try:
        data = tracker.client.get_run(tracker.run_id).data.metrics
    except Exception:  # noqa: BLE001 - the card is still written without the monitor line
        return {}
    return {k: v for k, v in data.items() if k.startswith("val.exact.")}
