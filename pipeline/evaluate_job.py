"""Evaluation of one cell (backbone x method x benchmark): answers, official scores, outputs and MLflow.

Shared by ``jobs/evaluate.py`` (in-process) and the evaluation-matrix actors (``pipeline.eval_matrix``).
Outputs of a cell folder: ``predictions.jsonl`` and ``predictions.parquet`` (question id, prompt, answer, kept
visual tokens and their indices, tokens per LLM layer, latency) and ``summary.json`` (the benchmark's official
aggregate plus kept-token, latency and token-recall statistics), written last so that its presence marks the
cell as finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

import stepprune
from pipeline.config_loader import config_hash
from pipeline.eval_config import BenchmarkRef, EvalJobConfig, MethodRef
from pipeline.tracking import MlflowTracker, default_tracking_uri, log_provenance
from stepprune.benchmarks import get_benchmark
from stepprune.benchmarks.base import BenchmarkItem
from stepprune.evaluation import Prediction, predict, token_recall

SUMMARY = "summary.json"


def build_method(ref: MethodRef, adapter: stepprune.BackboneAdapter, budget: int | None = None,
                 ratio: float | None = None) -> stepprune.PruningMethod:
    """The method of a cell: from its config, or loaded from a trained checkpoint; budget/ratio applied when the
    method is budgeted."""
    cls = stepprune.method_class(ref.name)
    values = dict(ref.config)
    if cls.budgeted and (budget is not None or ratio is not None):
        values.pop("budget", None)
        values.pop("ratio", None)
        values["budget" if budget is not None else "ratio"] = budget if budget is not None else ratio
    if ref.checkpoint is None:
        return stepprune.build_method(ref.name, values)
    from stepprune.checkpoint import load_checkpoint

    method = load_checkpoint(ref.checkpoint, adapter)
    if method.name != ref.name:
        raise ValueError(f"checkpoint {ref.checkpoint} holds method {method.name!r}, not {ref.name!r}")
    if values:  # evaluation-time settings (e.g. a budget) override the trained config where the method allows it
        method.config = dataclasses.replace(method.config, **values)
    return method


def summarize(bench, items: Sequence[BenchmarkItem], preds: Sequence[Prediction], flavour: str) -> dict[str, Any]:
    """The benchmark's official aggregate plus kept tokens, tokens per layer, latency and token recall."""
    agg = bench.aggregate(items, [p.answer for p in preds], flavour=flavour)
    kept = [p.kept for p in preds]
    lat = [p.latency_ms for p in preds]
    layers = len(preds[0].visual_per_layer) if preds else 0
    summary = {
        "benchmark": bench.NAME,
        "headline_key": bench.HEADLINE,
        "headline": agg.get(bench.HEADLINE),
        "aggregate": agg,
        "items": len(preds),
        "kept_mean": statistics.fmean(kept) if kept else 0.0,
        "kept_std": statistics.pstdev(kept) if len(kept) > 1 else 0.0,
        "kept_per_layer_mean": [statistics.fmean(p.visual_per_layer[i] for p in preds) for i in range(layers)],
        # what is left in each layer's KV cache when generation ends (decode-time eviction lowers it)
        "cached_per_layer_mean": [statistics.fmean(p.cached_visual_per_layer[i] for p in preds)
                                  for i in range(layers)] if preds and preds[0].cached_visual_per_layer else [],
        "latency_ms_mean": statistics.fmean(lat) if lat else 0.0,
        "latency_ms_median": statistics.median(lat) if lat else 0.0,
        "token_recall": token_recall(items, preds),
    }
    return summary


def write_cell(folder: Path, preds: Sequence[Prediction], summary: dict[str, Any], per_item: Sequence[float]) -> None:
    """Writes predictions (JSONL + Parquet) then the summary (atomically, last)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{**p.to_row(), "score": s} for p, s in zip(preds, per_item)]
    with open(folder / "predictions.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), folder / "predictions.parquet")
    tmp = folder / (SUMMARY + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, folder / SUMMARY)


def cell_done(folder: Path, cell_hash: str) -> dict[str, Any] | None:
    """The finished cell's summary when ``folder`` holds one for exactly this cell config, else None."""
    f = folder / SUMMARY
    if not f.exists():
        return None
    summary = json.loads(f.read_text())
    return summary if summary.get("cell_hash") == cell_hash else None


def load_items(ref: BenchmarkRef) -> list[BenchmarkItem]:
    return get_benchmark(ref.name).load(ref.folder, split=ref.split, limit=ref.limit)


def run(cfg: EvalJobConfig) -> dict[str, Any]:
    """``jobs/evaluate.py``: evaluates one cell in this process and logs it to MLflow."""
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = cfg.backbone.dtype if cfg.backbone.dtype != "auto" else (
        torch.bfloat16 if device == "cuda" else torch.float32)
    adapter = stepprune.load_backbone(cfg.backbone.path, device=device, dtype=dtype,
                                      attn_implementation=cfg.backbone.attn_implementation,
                                      trust_remote_code=cfg.backbone.trust_remote_code)
    method = build_method(cfg.method, adapter, cfg.budget, cfg.ratio)
    bench = get_benchmark(cfg.benchmark.name)
    items = load_items(cfg.benchmark)
    preds = predict(stepprune.PrunedVLM(adapter, method), items, batch_size=cfg.batch_size,
                    max_new_tokens=cfg.benchmark.max_new_tokens,
                    on_batch=lambda d, n: print(f"[eval] {d}/{n}", flush=True))
    summary = summarize(bench, items, preds, cfg.benchmark.flavour)
    summary.update(method=cfg.method.display, budget=cfg.budget, ratio=cfg.ratio, cell_hash=config_hash(cfg))
    budget = cfg.budget if cfg.budget is not None else (cfg.ratio if cfg.ratio is not None else "all")
    out = Path(cfg.output) / Path(cfg.backbone.path).name / f"{cfg.method.display}@{budget}" / bench.NAME
    per_item = [bench.score_one(p.answer, it, flavour=cfg.benchmark.flavour) for p, it in zip(preds, items)]
    write_cell(out, preds, summary, per_item)
    uri = cfg.tracking.uri or default_tracking_uri(Path(cfg.output))
    tracker = MlflowTracker(uri, cfg.tracking.experiment, run_name=cfg.tracking.run_name or
                            f"{cfg.method.display}@{budget}/{bench.NAME}", tags={"job": "evaluate"})
    from pipeline.config_loader import flatten

    tracker.log_params(flatten(cfg))
    tracker.log_metrics(numeric_metrics(summary))
    tracker.log_artifact(out, "cell")
    log_provenance(tracker)
    tracker.close()
    summary["output"] = str(out)
    summary["mlflow_run_id"] = tracker.run_id
    return summary


def numeric_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's numbers as flat MLflow metrics (aggregate keys prefixed ``score.``)."""
    out = {f"score.{k}".replace("/", "."): float(v) for k, v in summary["aggregate"].items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k in ("kept_mean", "kept_std", "latency_ms_mean", "latency_ms_median", "token_recall", "items"):
        if isinstance(summary.get(k), (int, float)):
            out[k] = float(summary[k])
    return out
