"""Measuring a backbone on SynthVQA: greedy answers of training-free methods (``vanilla``, ``blind``) on a native
split through the project's own evaluation code (:func:`stepprune.evaluation.predict` and
:func:`stepprune.benchmarks.synthvqa.aggregate`), and the per-family table the model card and
``jobs/evaluate_backbone.py`` print.

The split is generated on first use into its own folder (not the embedded default's ``data/synthvqa``, whose
generation must stay with the training job). Its images are the generator's ``(seed, split, index)`` images, so
the test split of any SynthVQA generation with the same seed starts with exactly these images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import stepprune
from pipeline.pretrain_config import BackboneEvalSpec
from stepprune.benchmarks import synthvqa
from stepprune.evaluation import predict

FAMILY_ROWS = [*synthvqa.TABLE_COLUMNS, "describe"]


def ensure_split(spec: BackboneEvalSpec) -> Path:
    """The native split folder of ``spec``, generated (that split only, native format only) when missing.

    Raises:
        ValueError: the folder holds a generation with a different seed or image count.
    """
    from stepprune.data.synthvqa import generate_synthvqa

    root = Path(spec.folder)
    split_dir = root / "native" / spec.split
    manifest = root / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        got = (m["config"]["seed"], m["config"][f"n_{spec.split}_images"])
        if got != (spec.seed, spec.n_images):
            raise ValueError(f"{root} holds SynthVQA with seed {got[0]} and {got[1]} {spec.split} images; the "
                             f"config asks for seed {spec.seed} and {spec.n_images}. Remove it or change "
                             "eval.folder.")
        return split_dir
    sizes = {f"n_{s}_images": (spec.n_images if s == spec.split else 0) for s in ("train", "val", "test")}
    print(f"[eval] generating SynthVQA {spec.split} ({spec.n_images} images, seed {spec.seed}) into {root}",
          flush=True)
    generate_synthvqa(root, seed=spec.seed, llava_splits=(), benchmark_splits=(), **sizes)
    return split_dir


def evaluate_backbone(path: str | Path, spec: BackboneEvalSpec,
                      progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Runs every method of ``spec`` on the split and aggregates per family.

    Returns:
        ``{"split", "questions", "images", "results": {method: {"aggregate": {...}, "seconds": s}}}``;
        each aggregate is :func:`stepprune.benchmarks.synthvqa.aggregate`'s (``overall``, per family, counts).
    """
    split_dir = ensure_split(spec)
    items = synthvqa.load(split_dir, limit=spec.limit)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    adapter = stepprune.load_backbone(path, device=device)
    results: dict[str, Any] = {}
    for name in spec.methods:
        vlm = stepprune.PrunedVLM(adapter, stepprune.build_method(name))
        t0 = time.perf_counter()
        preds = predict(vlm, items, batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens,
                        on_batch=(lambda d, n, m=name: progress(m, d, n)) if progress else None)
        agg = synthvqa.aggregate(items, [p.answer for p in preds], flavour=spec.flavour)
        results[name] = {"aggregate": agg, "seconds": time.perf_counter() - t0}
    return {"split": str(split_dir), "questions": len(items),
            "images": len({it.meta["image_id"] for it in items}), "results": results}


def family_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per family (and overall), one accuracy column per method, plus counts."""
    methods = list(report["results"])
    aggs = [report["results"][m]["aggregate"] for m in methods]
    lines = ["| family | questions | " + " | ".join(methods) + " |",
             "|---|---:|" + "---:|" * len(methods)]
    for fam in FAMILY_ROWS:
        if f"n/{fam}" not in aggs[0]:
            continue
        name = f"{fam} (mention recall, not in overall)" if fam in synthvqa.NOT_IN_OVERALL else fam
        lines.append(f"| {name} | {int(aggs[0][f'n/{fam}'])} | "
                     + " | ".join(f"{100 * a[fam]:.1f}" for a in aggs) + " |")
    lines.append(f"| **overall** | {int(aggs[0]['n/overall'])} | "
                 + " | ".join(f"**{100 * a['overall']:.1f}**" for a in aggs) + " |")
    return "\n".join(lines)


def headline(report: dict[str, Any]) -> dict[str, float]:
    """Flat metrics for MLflow: ``<method>.<family>`` accuracies, ``overall`` included, and seconds."""
    out = {}
    for m, r in report["results"].items():
        for k, v in r["aggregate"].items():
            if not k.startswith("n/"):
                out[f"{m}.{k.replace('/', '.')}"] = float(v)
        out[f"{m}.seconds"] = float(r["seconds"])
    return out
