"""The evaluation matrix: backbones x methods x budgets x benchmarks, fanned out over Ray actors.

* Each benchmark is loaded by its module, its rows (id, prompt, image bytes) are read in parallel with Ray Data and
  split into one shard per actor.
* Each actor loads its backbone once (``num_gpus`` may be fractional) and answers its shard of every cell.
  Actors are restarted and their tasks retried when they crash (``max_restarts``), so a crashed actor's cell is
  retried; a cell that still fails is reported and the others go on.
* Cells are resumable: a cell folder with a ``summary.json`` for the same cell config is skipped.
* MLflow: one parent run for the matrix, one child run per cell; the tables (Markdown, LaTeX, CSV) and the
  Fig. 4 PNGs are logged to the parent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import ray

from pipeline.config_loader import config_hash, flatten
from pipeline.eval_config import BenchmarkRef, MatrixConfig, MatrixMethod
from pipeline.evaluate_job import cell_done, load_items, numeric_metrics, summarize, write_cell
from pipeline.tables import build_rows, csv_text, fig4, latex, markdown
from pipeline.tracking import MlflowTracker, default_tracking_uri, log_provenance
from stepprune.benchmarks import get_benchmark
from stepprune.benchmarks.base import BenchmarkItem


@dataclasses.dataclass
class Cell:
    """One backbone x method x budget x benchmark."""

    backbone: str
    backbone_path: str
    method: MatrixMethod
    budget: int | None
    ratio: float | None
    benchmark: BenchmarkRef

    @property
    def budget_label(self) -> str:
        return str(self.budget) if self.budget is not None else (str(self.ratio) if self.ratio is not None else "all")

    @property
    def path(self) -> Path:
        return Path(self.backbone) / f"{self.method.display}@{self.budget_label}" / self.benchmark.name

    def hash(self, batch_size: int) -> str:
        return config_hash({"backbone": self.backbone_path, "method": dataclasses.asdict(self.method),
                            "budget": self.budget, "ratio": self.ratio,
                            "benchmark": dataclasses.asdict(self.benchmark), "batch_size": batch_size})


def expand(cfg: MatrixConfig) -> list[Cell]:
    """Every cell of the matrix, in table order."""
    import stepprune

    cells = []
    for bb in cfg.backbones:
        for m in cfg.methods:
            budgeted = stepprune.method_class(m.name).budgeted
            if m.ratios:
                settings = [(None, r) for r in m.ratios]
            elif budgeted:
                settings = [(b, None) for b in (m.budgets or cfg.budgets)]
            else:
                settings = [(None, None)]
            for budget, ratio in settings:
                for bench in cfg.benchmarks:
                    cells.append(Cell(bb.name, bb.path, m, budget, ratio, bench))
    # Two entries with one label (e.g. a learned method trained once per budget) must not share a cell: the second
    # would overwrite the first's folder and table row.
    seen: dict[Path, MatrixMethod] = {}
    for c in cells:
        if c.path in seen:
            raise ValueError(f"eval matrix: two methods write cell {c.path} ({seen[c.path]} and {c.method}); give "
                             "them different labels or budgets")
        seen[c.path] = c.method
    return cells


def _read_bytes(batch: dict[str, Any]) -> dict[str, Any]:
    """Ray Data UDF: reads each row's image file into bytes (rows with embedded bytes keep them)."""
    blobs = []
    for path, blob in zip(batch["image_path"], batch["image_bytes"]):
        blobs.append(blob if len(blob) else Path(path).read_bytes())
    batch["image_bytes"] = blobs
    return batch


def shard_benchmark(items: list[BenchmarkItem], n: int) -> list[ray.data.Dataset]:
    """Reads the items' images with Ray Data and splits the rows into ``n`` shards (order kept by ``idx``)."""
    rows = [{"idx": i, "qid": it.qid, "prompt": it.prompt, "image_path": str(it.image_path or ""),
             "image_bytes": it.image_bytes or b""} for i, it in enumerate(items)]
    ds = ray.data.from_items(rows).map_batches(_read_bytes, batch_format="numpy", batch_size=64)
    return ds.materialize().split(n)


@ray.remote
class EvalActor:
    """Holds one backbone; answers shards of cells."""

    def __init__(self, path: str, dtype: str, threads: int | None, use_gpu: bool, fail_once_marker: str | None):
        import torch

        import stepprune

        self.fail_once_marker = fail_once_marker
        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if use_gpu else "cpu"
        dt = dtype if dtype != "auto" else (torch.bfloat16 if use_gpu else torch.float32)
        self.adapter = stepprune.load_backbone(path, device=device, dtype=dt)

    def run(self, shard: ray.data.Dataset, method: dict, budget: int | None, ratio: float | None,
            batch_size: int, max_new_tokens: int) -> list[tuple[int, dict]]:
        import stepprune
        from pipeline.eval_config import MatrixMethod
        from pipeline.evaluate_job import build_method
        from stepprune.evaluation import predict

        if self.fail_once_marker and not Path(self.fail_once_marker).exists():
            Path(self.fail_once_marker).write_text("evaluation actor killed once\n")
            os._exit(1)  # a real process death: Ray restarts the actor and retries this task
        ref = MatrixMethod(**method)
        m = build_method(ref, self.adapter, budget, ratio)
        rows = list(shard.iter_rows())
        items = [BenchmarkItem(qid=r["qid"], prompt=r["prompt"], answer=None, image_bytes=bytes(r["image_bytes"]))
                 for r in rows]
        preds = predict(stepprune.PrunedVLM(self.adapter, m), items, batch_size=batch_size,
                        max_new_tokens=max_new_tokens)
        return [(int(r["idx"]), p.to_row()) for r, p in zip(rows, preds)]


def run(cfg: MatrixConfig) -> dict[str, Any]:
    """Runs (or resumes) the matrix; returns the tables and the cell summaries."""
    from stepprune.evaluation import Prediction

    t0 = time.perf_counter()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cells = expand(cfg)
    uri = cfg.tracking.uri or default_tracking_uri(out)
    parent_file = out / "mlflow_parent_run_id"
    parent = (MlflowTracker(uri, run_id=parent_file.read_text().strip()) if parent_file.exists() else
              MlflowTracker(uri, cfg.tracking.experiment, run_name=cfg.tracking.run_name or "eval_matrix",
                            tags={"job": "eval_matrix"}))
    parent_file.write_text(parent.run_id)
    parent.log_params(flatten(cfg))

    summaries: dict[str, dict] = {}
    todo = []
    for c in cells:
        done = cell_done(out / c.path, c.hash(cfg.batch_size))
        if done is not None:
            summaries[str(c.path)] = done
        else:
            todo.append(c)
    print(f"[matrix] {len(cells)} cells: {len(cells) - len(todo)} already finished, {len(todo)} to run", flush=True)

    failed = []
    use_gpu = cfg.actors.num_gpus > 0
    for bb in cfg.backbones:
        mine = [c for c in todo if c.backbone == bb.name]
        if not mine:
            continue
        actors = [EvalActor.options(num_cpus=cfg.actors.num_cpus, num_gpus=cfg.actors.num_gpus,
                                    max_restarts=cfg.actors.max_restarts,
                                    max_task_retries=cfg.actors.max_restarts).remote(
            bb.path, bb.dtype, cfg.actors.torch_threads, use_gpu, cfg.actors.fail_once_marker)
            for _ in range(cfg.actors.num_actors)]
        items_of: dict[str, list[BenchmarkItem]] = {}
        shards_of: dict[str, list] = {}
        pending = []
        for c in mine:
            key = json.dumps(dataclasses.asdict(c.benchmark), sort_keys=True)
            if key not in items_of:
                items_of[key] = load_items(c.benchmark)
                shards_of[key] = shard_benchmark(items_of[key], len(actors))
            futures = [a.run.remote(s, dataclasses.asdict(c.method), c.budget, c.ratio, cfg.batch_size,
                                    c.benchmark.max_new_tokens) for a, s in zip(actors, shards_of[key])]
            pending.append((c, key, futures))
        for c, key, futures in pending:
            try:
                parts = [row for part in ray.get(futures) for row in part]
            except Exception as e:  # noqa: BLE001 - a cell failing after retries must not stop the matrix
                failed.append((str(c.path), f"{type(e).__name__}: {e}"))
                print(f"[matrix] cell {c.path} FAILED: {e}", flush=True)
                continue
            items = items_of[key]
            preds = [Prediction(**row) for _, row in sorted(parts, key=lambda x: x[0])]
            bench = get_benchmark(c.benchmark.name)
            summary = summarize(bench, items, preds, c.benchmark.flavour)
            summary.update(backbone=c.backbone, method=c.method.display, budget_label=c.budget_label,
                           cell_hash=c.hash(cfg.batch_size))
            per_item = [bench.score_one(p.answer, it, flavour=c.benchmark.flavour) for p, it in zip(preds, items)]
            write_cell(out / c.path, preds, summary, per_item)
            summaries[str(c.path)] = summary
            child = MlflowTracker(uri, cfg.tracking.experiment, run_name=str(c.path), parent_run_id=parent.run_id,
                                  tags={"job": "eval_cell", "method": c.method.display, "benchmark": bench.NAME})
            child.log_params({"backbone": c.backbone, "method": c.method.display, "budget": c.budget_label,
                              "benchmark": bench.NAME})
            child.log_metrics(numeric_metrics(summary))
            child.log_artifact(out / c.path, "cell")
            child.close()
            print(f"[matrix] {c.path}: {bench.HEADLINE}={summary['headline']:.2f} kept={summary['kept_mean']:.1f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        for a in actors:
            ray.kill(a)

    tables = write_tables(cfg, cells, summaries, out, parent)
    parent.log_metrics({"cells": len(cells), "cells_failed": len(failed)})
    log_provenance(parent, time.perf_counter() - t0)
    parent.close("FAILED" if failed else "FINISHED")
    return {"tables": tables, "summaries": summaries, "failed": failed, "seconds": time.perf_counter() - t0,
            "mlflow_run_id": parent.run_id, "output": str(out)}


def write_tables(cfg: MatrixConfig, cells: list[Cell], summaries: dict[str, dict], out: Path,
                 tracker: MlflowTracker) -> dict[str, str]:
    """Table 1 (Markdown, LaTeX, CSV) and Fig. 4 PNGs for adaptive methods, written and logged."""
    done = [summaries[str(c.path)] for c in cells if str(c.path) in summaries]
    rows, columns = build_rows(done, cfg.tables.vanilla, cfg.tables.retention_benchmarks)
    texts = {"table1.md": markdown(rows, columns), "table1.tex": latex(rows, columns), "table1.csv": csv_text(
        rows, columns)}
    tables_dir = out / "tables"
    tables_dir.mkdir(exist_ok=True)
    for name, text in texts.items():
        (tables_dir / name).write_text(text)
    for c in cells:
        s = summaries.get(str(c.path))
        if s is None or s.get("kept_std", 0) <= 0 or s.get("kept_mean", 0) <= 0:
            continue
        preds = [json.loads(line) for line in (out / c.path / "predictions.jsonl").read_text().splitlines()]
        name = f"fig4_{c.backbone}_{c.method.display}_{c.budget_label}_{c.benchmark.name}.png".replace("/", "_")
        fig4([p["kept"] for p in preds], [p["score"] for p in preds], tables_dir / name,
             f"{c.method.display} on {c.benchmark.name}: K histogram and per-bucket accuracy")
    tracker.log_artifact(tables_dir, "tables")
    return texts
