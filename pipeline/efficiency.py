"""The efficiency job: the paper's Table 3 (visual tokens, TFLOPs, latency, speed-up against vanilla) for one
backbone, any methods and budgets; FLOPs counted on the meta device, latency measured with every method in the
same run. Writes ``table.md``, ``table.csv`` and ``rows.json`` under ``output/name/`` and logs them to MLflow (a
parent run with the tables and the target checks, one child run per row with its numbers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import stepprune
from pipeline.config_loader import flatten
from pipeline.efficiency_config import EfficiencyJobConfig, EfficiencyMethod, LatencyConfig
from pipeline.efficiency_table import check_targets, csv_text, markdown, records
from pipeline.evaluate_job import build_method
from pipeline.tracking import MlflowTracker, default_tracking_uri, log_provenance
from stepprune.efficiency import (
    ADAPTIVE,
    FlopBreakdown,
    Latency,
    MetaScene,
    PromptShape,
    build_adapter,
    measure,
    method_flops,
    real_config,
    vision_flops,
)
from stepprune.efficiency.backbones import REAL_CONFIGS
from stepprune.efficiency.latency import input_size, random_prompt


@dataclasses.dataclass
class Row:
    """One table row: a method at one budget (or K), and what was counted and measured for it."""

    method: EfficiencyMethod
    budget: int | None
    flops: FlopBreakdown | None = None
    latency: dict[int, Latency] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.method.display

    @property
    def key(self) -> str:
        return f"{self.label}@{'all' if self.budget is None else self.budget}"


def expand(cfg: EfficiencyJobConfig) -> list[Row]:
    """The rows in table order: the reference row first, then each method's budgets in the configured order."""
    methods = cfg.methods or [EfficiencyMethod(name) for name in sorted(stepprune.METHODS)]
    rows = []
    for m in methods:
        cls = stepprune.method_class(m.name)
        per_budget = cls.budgeted or m.name in ADAPTIVE
        for budget in ((m.budgets or cfg.budgets) if per_budget else [None]):
            rows.append(Row(m, budget))
    return sorted(rows, key=lambda r: r.label != cfg.vanilla)  # stable: only moves the reference row up


def row_method(row: Row, adapter: stepprune.BackboneAdapter, timed: bool) -> stepprune.PruningMethod:
    """The row's method: its config with the row's budget (budgeted methods) or, when ``timed``, the config that
    keeps exactly K tokens (adaptive methods; FLOPs take K directly); weights from the checkpoint when given."""
    config = dict(row.method.config)
    if row.budget is not None:
        if stepprune.method_class(row.method.name).budgeted:
            config.pop("ratio", None)
            config["budget"] = row.budget
        elif timed:
            config = ADAPTIVE[row.method.name](config, row.budget)
    return build_method(dataclasses.replace(row.method, config=config), adapter)


def run_flops(cfg: EfficiencyJobConfig, rows: list[Row]) -> None:
    """Counts every row's FLOPs on the meta device (fills ``row.flops``, per batch of ``flops.batch``)."""
    f = cfg.flops
    p = f.prompt
    adapter = build_adapter(real_config(f.backbone), device="meta", image_size=f.image_size)
    scene = MetaScene(adapter, PromptShape(p.prefix_tokens, p.suffix_tokens, p.question_tokens), f.batch,
                      f.image_size)
    vision = vision_flops(scene)
    for row in rows:
        method = row_method(row, adapter, timed=False)
        k = row.budget if row.method.name in ADAPTIVE else None
        row.flops = method_flops(scene, method, k, vision=vision)


@contextlib.contextmanager
def latency_backbone(lat: LatencyConfig) -> Iterator[stepprune.BackboneAdapter]:
    """The backbone to time (see :class:`LatencyConfig`); a tiny one built offline lives in a temporary folder."""
    device = lat.device if lat.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = lat.dtype if lat.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    dtype = getattr(torch, dtype)
    committed = Path("checkpoints/synthvqa-llava-tiny")
    with tempfile.TemporaryDirectory() as tmp:
        if lat.backbone == "tiny" and (committed / "config.json").is_file():
            path = committed
        elif lat.backbone in ("tiny", "tiny_qwen"):
            from stepprune.backbones.tiny import build_tiny_llava, build_tiny_qwen2_5_vl

            build = build_tiny_llava if lat.backbone == "tiny" else build_tiny_qwen2_5_vl
            path = build(Path(tmp) / lat.backbone, seed=lat.seed)
        elif lat.backbone in REAL_CONFIGS:
            yield build_adapter(real_config(lat.backbone), device=device, dtype=dtype, image_size=lat.image_size,
                                seed=lat.seed)
            return
        else:
            path = Path(lat.backbone)
        yield stepprune.load_backbone(path, device=device, dtype=dtype)


def run_latency(cfg: EfficiencyJobConfig, rows: list[Row]) -> dict[str, Any]:
    """Times every row at every batch size on one backbone, all rows in the same run (fills ``row.latency``).

    Returns:
        What was timed on what (``device``, ``dtype``, ``backbone``, ``threads``).
    """
    lat = cfg.latency
    previous = torch.get_num_threads()
    if lat.threads is not None:
        torch.set_num_threads(lat.threads)
    try:
        with latency_backbone(lat) as adapter:
            vlms = {}
            for row in rows:
                method = row_method(row, adapter, timed=True)
                if hasattr(method, "bind"):  # trainable methods build their modules for this backbone now
                    method.bind(adapter)
                if lat.selector_dtype == "backbone":
                    method.to(dtype=adapter.dtype)
                vlms[row.key] = stepprune.PrunedVLM(adapter, method)
            for batch in lat.batches:
                prompt = random_prompt(adapter, batch, lat.prompt, lat.image_size, lat.seed)
                for key, result in measure(vlms, prompt, warmup=lat.warmup, repeats=lat.repeats).items():
                    next(r for r in rows if r.key == key).latency[batch] = result
            return {"device": str(adapter.device), "dtype": str(adapter.dtype).removeprefix("torch."),
                    "backbone": lat.backbone, "threads": torch.get_num_threads(),
                    "image_size": input_size(adapter, lat.image_size)}
    finally:
        torch.set_num_threads(previous)


def run(cfg: EfficiencyJobConfig) -> dict[str, Any]:
    """Runs the job: FLOPs and/or latency for every row, then the tables, the target checks and MLflow."""
    t0 = time.perf_counter()
    rows = expand(cfg)
    if cfg.flops.enabled:
        run_flops(cfg, rows)
    timed_on = run_latency(cfg, rows) if cfg.latency.enabled else None
    batches = list(cfg.latency.batches) if cfg.latency.enabled else []
    recs = records(rows, cfg.vanilla, batches, cfg.flops.batch)
    checks = check_targets(recs, cfg.targets, batches)
    out = Path(cfg.output) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    header = describe(cfg, timed_on)
    table = markdown(recs, batches, header)
    (out / "table.md").write_text(table + "\n" + "\n".join(checks) + "\n")
    (out / "table.csv").write_text(csv_text(recs))
    (out / "rows.json").write_text(json.dumps({"setting": header, "rows": recs, "checks": checks}, indent=2))
    run_id = log_mlflow(cfg, recs, checks, out, time.perf_counter() - t0)
    return {"table": table, "checks": checks, "records": recs, "output": str(out), "mlflow_run_id": run_id}


def describe(cfg: EfficiencyJobConfig, timed_on: dict[str, Any] | None) -> dict[str, Any]:
    """What the numbers are about (printed above the table, stored with it)."""
    out: dict[str, Any] = {}
    if cfg.flops.enabled:
        p = cfg.flops.prompt
        out["flops"] = {"backbone": cfg.flops.backbone, "device": "meta", "per": "sample",
                        "text_tokens": p.prefix_tokens + p.suffix_tokens, "question_tokens": p.question_tokens}
    if timed_on is not None:
        out["latency"] = {**timed_on, "warmup": cfg.latency.warmup, "repeats": cfg.latency.repeats,
                          "batches": cfg.latency.batches}
    return out


def log_mlflow(cfg: EfficiencyJobConfig, recs: list[dict[str, Any]], checks: list[str], out: Path,
               seconds: float) -> str:
    """A parent run (config, tables, checks, the job's wall time in ``seconds``) and one child run per row;
    returns the parent's run id."""
    uri = cfg.tracking.uri or default_tracking_uri(Path(cfg.output))
    parent = MlflowTracker(uri, cfg.tracking.experiment, run_name=cfg.tracking.run_name or cfg.name,
                           tags={"job": "efficiency"})
    parent.log_params(flatten(cfg))
    for rec in recs:
        child = MlflowTracker(uri, cfg.tracking.experiment, run_name=rec["key"], parent_run_id=parent.run_id,
                              tags={"job": "efficiency", "method": rec["method"]})
        child.log_params({"method": rec["method"], "label": rec["label"], "budget": rec["budget"]})
        child.log_metrics({k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        child.close()
    parent.log_text("\n".join(checks) + "\n", "checks.txt")
    parent.log_artifact(out, "efficiency")
    log_provenance(parent, seconds)
    parent.close()
    return parent.run_id
