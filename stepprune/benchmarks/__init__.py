"""Benchmarks, one small module each, read from their official on-disk formats and scored by the official rules.
See :mod:`stepprune.benchmarks.base` for the interface every module provides.

``BENCHMARKS`` maps each registered name to its module (``NAME``, ``HEADLINE``, ``load``, ``score_one``,
``aggregate``, and ``details`` for a per-item explanation); :func:`get_benchmark` looks one up.
:mod:`stepprune.benchmarks.retention` turns headline scores into the papers' "Avg." retention column, and
:mod:`stepprune.benchmarks.fixtures` writes tiny copies of every on-disk layout for tests.
"""

from __future__ import annotations

from types import ModuleType

from stepprune.benchmarks import (
    gqa,
    mmbench,
    mmbench_cn,
    mme,
    pope,
    scienceqa,
    synthvqa,
    synthvqa_describe,
    textvqa,
    vqav2,
)
from stepprune.benchmarks.base import BenchmarkItem, RecordError
from stepprune.benchmarks.retention import PAPER_BENCHMARKS, Retention, headline_scores, retention

BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module for module in (gqa, mmbench, mmbench_cn, mme, pope, scienceqa, vqav2, textvqa, synthvqa,
                                       synthvqa_describe)
}

class UnknownBenchmarkError(KeyError):
    """Raised for a benchmark name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def get_benchmark(name: str) -> ModuleType:
    """The benchmark module registered under ``name`` (e.g. ``"gqa"``, ``"mmbench_cn"``, ``"pope"``)."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)}") from None


__all__ = [
    "BENCHMARKS",
    "BenchmarkItem",
    "PAPER_BENCHMARKS",
    "RecordError",
    "Retention",
    "UnknownBenchmarkError",
    "get_benchmark",
    "headline_scores",
    "retention",
]
