"""The efficiency job's outputs: flat per-row records, the Table 3 layout in Markdown, CSV, and the target checks.

Columns: method, budget, visual tokens handed to the LLM, visual tokens entering an LLM layer on average, TFLOPs
per sample (total, and vision tower + projector / the method's own work / LLM prefill), the method's FLOPs as a
share of its prefill's, and per timed batch size the median time to first token with its interquartile range and
the speed-up against the vanilla row timed in the same run (ratio of medians). A second table splits the medians
into vision / selection / prefill.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from pipeline.efficiency_config import TargetsConfig


def records(rows: Sequence[Any], vanilla: str, batches: Sequence[int], flops_batch: int) -> list[dict[str, Any]]:
    """One flat record per row (see the module docstring); FLOPs are divided by the counted batch size."""
    ref = next((r for r in rows if r.label == vanilla), None)
    out = []
    for r in rows:
        rec: dict[str, Any] = {"key": r.key, "label": r.label, "method": r.method.name,
                               "budget": "all" if r.budget is None else r.budget}
        if r.flops is not None:
            f = r.flops
            per = flops_batch * 1e12  # TFLOPs per sample
            rec.update(visual_tokens=f.visual, tokens_per_layer=round(f.mean_per_layer, 1), tflops=f.total / per,
                       tflops_vision=(f.vision + f.projector) / per, tflops_method=f.method / per,
                       tflops_prefill=f.prefill / per, method_share=f.method / f.prefill)
        for b in batches:
            lat = r.latency[b]
            rec.setdefault("visual_tokens", round(lat.kept, 1))
            rec.setdefault("tokens_per_layer", round(lat.mean_per_layer, 1))
            for part, s in lat.parts.items():
                rec[f"{part}_b{b}_ms"] = s.median
            ttft = lat.parts["ttft"]
            rec[f"ttft_b{b}_p25_ms"], rec[f"ttft_b{b}_p75_ms"] = ttft.p25, ttft.p75
            rec[f"selection_share_b{b}"] = lat.parts["selection"].median / lat.parts["prefill"].median
            if ref is not None:
                rec[f"speedup_b{b}"] = ref.latency[b].parts["ttft"].median / ttft.median
        out.append(rec)
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(recs: Sequence[dict[str, Any]], batches: Sequence[int], setting: dict[str, Any]) -> str:
    """Table 3 (and, with latency, its per-part breakdown) as Markdown, under a line naming the setting."""
    lines = [f"Setting: {setting}", ""]
    flops = any("tflops" in r for r in recs)
    head = ["Method", "Budget", "Visual tokens", "Tokens / layer"]
    if flops:
        head += ["TFLOPs", "Vision", "Method", "Prefill", "Method / prefill"]
    for b in batches:
        head += [f"TTFT b={b} (ms) [IQR]", f"Speed-up b={b}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in recs:
        cells = [r["label"], str(r["budget"]), _fmt(r.get("visual_tokens"), 1), _fmt(r.get("tokens_per_layer"), 1)]
        if flops:
            cells += [_fmt(r.get(k)) for k in ("tflops", "tflops_vision", "tflops_method", "tflops_prefill")]
            cells.append(f"{100 * r['method_share']:.2f} %" if "method_share" in r else "–")
        for b in batches:
            cells.append(f"{r[f'ttft_b{b}_ms']:.2f} [{r[f'ttft_b{b}_p25_ms']:.2f}–{r[f'ttft_b{b}_p75_ms']:.2f}]")
            cells.append(f"{r[f'speedup_b{b}']:.2f}×" if f"speedup_b{b}" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    if batches:
        lines += ["", "Median milliseconds per part (selection: pre-LLM selection + splicing; in-LLM methods score "
                      "inside the prefill):", ""]
        head = ["Method", "Budget"] + [f"{p} b={b}" for b in batches for p in ("vision", "selection", "prefill",
                                                                                 "selection / prefill")]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in recs:
            cells = [r["label"], str(r["budget"])]
            for b in batches:
                cells += [f"{r[f'{p}_b{b}_ms']:.2f}" for p in ("vision", "selection", "prefill")]
                cells.append(f"{100 * r[f'selection_share_b{b}']:.1f} %")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(recs: Sequence[dict[str, Any]]) -> str:
    """Every record with every field (the union of the records' keys, in first-seen order)."""
    fields: list[str] = []
    for r in recs:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(recs)
    return buf.getvalue()


def check_targets(recs: Sequence[dict[str, Any]], t: TargetsConfig, batches: Sequence[int]) -> list[str]:
    """``[PASS]`` / ``[FAIL]`` lines for the configured bounds on the target row (reported, never raised)."""
    row = next((r for r in recs if r["label"] == t.method and r["budget"] == t.budget), None)
    if row is None:
        return [f"[SKIP] no row {t.method}@{t.budget} to check the targets on"]
    name = f"{t.method}@{t.budget}"
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"[{'PASS' if ok else 'FAIL'}] {name}: {text}")

    if t.max_method_flops_share is not None and "method_share" in row:
        share = row["method_share"]
        bound = 100 * t.max_method_flops_share
        check(share <= t.max_method_flops_share,
              f"method FLOPs / pruned-prefill FLOPs = {100 * share:.2f} % (target <= {bound:g} %)")
    if t.max_total_tflops is not None and "tflops" in row:
        check(row["tflops"] <= t.max_total_tflops,
              f"total = {row['tflops']:.3f} TFLOPs per sample (target <= {t.max_total_tflops:g})")
    for b in batches:
        if t.max_selection_time_share is not None:
            share = row[f"selection_share_b{b}"]
            check(share <= t.max_selection_time_share,
                  f"batch {b}: selection / pruned prefill time = {100 * share:.1f} % "
                  f"(target <= {100 * t.max_selection_time_share:g} %)")
        if t.min_ttft_speedup is not None and f"speedup_b{b}" in row:
            check(row[f"speedup_b{b}"] >= t.min_ttft_speedup,
                  f"batch {b}: TTFT speed-up over vanilla = {row[f'speedup_b{b}']:.2f}x "
                  f"(target >= {t.min_ttft_speedup:g}x)")
    return out
