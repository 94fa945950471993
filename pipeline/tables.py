"""The paper's result tables and Fig. 4 from finished evaluation cells.

Table 1 layout, per backbone: one row per method and budget; per benchmark column the raw score and, beneath it,
its ratio to the vanilla row of the same backbone; the "Avg." column is the arithmetic mean of those ratios over
the declared columns (ratios above 100 % are kept, as the papers do; ../shared/design/benchmarks.md §3); then the
token recall of evidence patches (SynthVQA) and the mean number of visual tokens handed to the LLM.
A benchmark may declare ``TABLE_COLUMNS`` (aggregate keys shown as separate columns, e.g. SynthVQA's families);
otherwise its ``HEADLINE`` is its one column.

Fig. 4: for a method whose kept count varies per image, the histogram of K in log-spaced buckets with each
bucket's accuracy.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks import get_benchmark


@dataclasses.dataclass
class Row:
    """One table row: a method at one budget on one backbone."""

    backbone: str
    method: str
    budget: str
    scores: dict[str, float]  # column -> raw score
    token_recall: float | None
    kept_mean: float
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    avg_retention: float | None = None

    @property
    def label(self) -> str:
        return row_label(self.method, self.budget)


def row_label(method: str, budget: str) -> str:
    """A table row's label: the method, with `` @ budget`` unless it ran at every budget (adaptive, references)."""
    return method if budget in ("", "all") else f"{method} @ {budget}"


def columns_of(benchmark: str) -> list[tuple[str, str]]:
    """(column name, aggregate key) pairs a benchmark contributes."""
    bench = get_benchmark(benchmark)
    keys = getattr(bench, "TABLE_COLUMNS", None) or [bench.HEADLINE]
    if len(keys) == 1:
        return [(benchmark, keys[0])]
    return [(f"{benchmark}:{k.split('/')[-1]}", k) for k in keys]


def build_rows(cells: Sequence[dict[str, Any]], vanilla: str = "vanilla",
               retention_columns: Sequence[str] | None = None) -> tuple[list[Row], list[str]]:
    """Cell summaries (each with backbone, method, budget, benchmark, aggregate, token_recall, kept_mean) -> rows
    with ratios to the vanilla row of their backbone and the Avg. retention. Returns (rows, column order)."""
    columns: list[str] = []
    by_key: dict[tuple[str, str, str], Row] = {}
    for c in cells:
        key = (c["backbone"], c["method"], str(c.get("budget_label", "")))
        row = by_key.setdefault(key, Row(c["backbone"], c["method"], str(c.get("budget_label", "")), {}, None, 0.0))
        for col, agg_key in columns_of(c["benchmark"]):
            if col not in columns:
                columns.append(col)
            if agg_key in c["aggregate"]:
                row.scores[col] = float(c["aggregate"][agg_key])
        if c.get("token_recall") is not None:
            row.token_recall = c["token_recall"]
        row.kept_mean = c.get("kept_mean", row.kept_mean)
    rows = list(by_key.values())
    ret_cols = list(retention_columns) if retention_columns else columns
    for r in rows:
        ref = next((v for v in rows if v.backbone == r.backbone and v.method == vanilla), None)
        if ref is None:
            continue
        for col, val in r.scores.items():
            base = ref.scores.get(col)
            if base:
                r.ratios[col] = 100.0 * val / base
        used = [r.ratios[c] for c in ret_cols if c in r.ratios]
        r.avg_retention = sum(used) / len(used) if used and len(used) == len([c for c in ret_cols if c in r.scores])\
            else None
    order = {vanilla: 0}
    rows.sort(key=lambda r: (r.backbone, order.get(r.method, 1), -_budget_num(r.budget), r.method))
    return rows, columns


def _budget_num(b: str) -> float:
    try:
        return float(b)
    except ValueError:
        return math.inf


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _score(x: float | None) -> str:
    """A raw score as the papers print it: accuracies kept in [0, 1] by a benchmark's scorer as percentages
    (61.9, not 0.6), totals such as MME's perception score as they are."""
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if 0.0 <= x <= 1.0 else f"{x:.1f}"


def markdown(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """Markdown table: raw score with its ratio to vanilla beneath (on a second line via <br>)."""
    head = ["method", *columns, "Avg.", "token recall", "kept"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backbone in dict.fromkeys(r.backbone for r in rows):
        if len({r.backbone for r in rows}) > 1:
            lines.append(f"| **{backbone}** |" + " |" * (len(head) - 1))
        for r in (x for x in rows if x.backbone == backbone):
            cells = [r.label]
            for c in columns:
                s = r.scores.get(c)
                cells.append("–" if s is None else f"{_score(s)}<br>{_fmt(r.ratios.get(c))}%")
            cells += [f"{_fmt(r.avg_retention)}%" if r.avg_retention is not None else "–",
                      _fmt(None if r.token_recall is None else 100 * r.token_recall) + ("%" if r.token_recall
                                                                                        is not None else ""),
                      f"{r.kept_mean:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def latex(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A LaTeX tabular in the papers' style (score over its ratio)."""
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("@", "@")  # noqa: E731
    out = [r"\begin{tabular}{l" + "c" * (len(columns) + 3) + "}", r"\toprule",
           " & ".join(["Method", *map(esc, columns), "Avg.", "Recall", "Kept"]) + r" \\", r"\midrule"]
    for r in rows:
        top = [esc(r.label)] + [_score(r.scores.get(c)) for c in columns] + [
            _fmt(r.avg_retention) + r"\%" if r.avg_retention is not None else "–",
            _fmt(None if r.token_recall is None else 100 * r.token_recall), f"{r.kept_mean:.1f}"]
        out.append(" & ".join(top) + r" \\")
        if r.ratios:
            out.append(" & ".join([""] + [_fmt(r.ratios.get(c)) + r"\%" if c in r.ratios else "" for c in columns]
                                  + ["", "", ""]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def csv_text(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """CSV with raw scores and ratios in separate columns."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["backbone", "method", "budget", *columns, *(f"{c} ratio%" for c in columns), "avg_retention%",
                "token_recall", "kept_mean"])
    for r in rows:
        w.writerow([r.backbone, r.method, r.budget, *(r.scores.get(c, "") for c in columns),
                    *(_round(r.ratios.get(c)) for c in columns), _round(r.avg_retention),
                    _round(r.token_recall, 4), _round(r.kept_mean)])
    return buf.getvalue()


def _round(x: float | None, d: int = 2) -> Any:
    return "" if x is None else round(x, d)


def log_buckets(values: Sequence[float], n: int = 8) -> list[float]:
    """``n`` log-spaced bucket edges covering ``values`` (all >= 1)."""
    lo, hi = max(1.0, min(values)), max(1.0, max(values))
    if hi <= lo:
        hi = lo + 1
    return [lo * (hi / lo) ** (i / n) for i in range(n + 1)]


def fig4(kept: Sequence[int], correct: Sequence[float], path: str | Path, title: str, n_buckets: int = 8) -> Path:
    """Fig. 4: histogram of K in log-spaced buckets (bars) with each bucket's accuracy (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = log_buckets(kept, n_buckets)
    counts = [0] * n_buckets
    sums = [0.0] * n_buckets
    for k, c in zip(kept, correct):
        i = min(n_buckets - 1, max(0, next((j for j in range(n_buckets) if k < edges[j + 1]), n_buckets - 1)))
        counts[i] += 1
        sums[i] += c
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    centres = [math.sqrt(edges[i] * edges[i + 1]) for i in range(n_buckets)]
    widths = [edges[i + 1] - edges[i] for i in range(n_buckets)]
    ax.bar(centres, counts, width=widths, color="#8fb3d9", edgecolor="#3b6ea8", align="center")
    ax.set_xscale("log")
    ax.set_xlabel("visual tokens kept (K), log-spaced buckets")
    ax.set_ylabel("images")
    ax2 = ax.twinx()
    acc = [100 * s / c if c else float("nan") for s, c in zip(sums, counts)]
    ax2.plot(centres, acc, "o-", color="#c0392b")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_ylim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
