"""The pruning papers' "Avg." column: per-benchmark retention ratios against the vanilla model, and their mean.

Convention (FastV / SparseVLM / VisionZip tables): each cell is ``score(method) / score(vanilla)`` on the same
benchmark, both measured by *our* pipeline (never against numbers copied from a paper), and Avg. is the plain
mean of those ratios over a declared benchmark list. Ratios above 100 % are kept, not capped. The headline
scores are the modules' ``HEADLINE`` keys, so MME enters with its P+C ``total`` and POPE with ``f1_mean``, the
mean F1 over its three categories. Avg. values are only comparable between rows that use the same list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

# The LLaVA-1.5 table of the pruning papers, in their column order.
PAPER_BENCHMARKS = ("gqa", "mmbench_en", "mmbench_cn", "mme", "pope", "scienceqa", "vqav2", "textvqa")


@dataclasses.dataclass(frozen=True)
class Retention:
    """Per-benchmark ratios and their mean, all in percent (vanilla = 100)."""

    ratios: dict[str, float]
    mean: float

    def as_dict(self, prefix: str = "retention/") -> dict[str, float]:
        """Flat ``{"retention/<benchmark>": ratio, ..., "retention/avg": mean}`` for metric loggers."""
        return {**{f"{prefix}{b}": r for b, r in self.ratios.items()}, f"{prefix}avg": self.mean}


def retention(method: Mapping[str, float], vanilla: Mapping[str, float],
              benchmarks: Sequence[str] = PAPER_BENCHMARKS) -> Retention:
    """Retention of a method relative to vanilla.

    Args:
        method: benchmark name -> headline score of the pruned model.
        vanilla: benchmark name -> headline score of the unpruned model, from the same pipeline.
        benchmarks: the declared list to average over (default: the paper table's eight).

    Raises:
        ValueError: a declared benchmark lacks a score on either side, or the vanilla score is not positive.

    Example::

        retention({"gqa": 55.0, "mme": 1612.0}, {"gqa": 61.9, "mme": 1862.0}, ["gqa", "mme"]).mean  # 87.7...
    """
    if not benchmarks:
        raise ValueError("declare at least one benchmark to average over")
    for side, scores in (("method", method), ("vanilla", vanilla)):
        missing = [b for b in benchmarks if b not in scores]
        if missing:
            raise ValueError(f"{side} scores lack {missing}; declared list: {list(benchmarks)}")
    bad = [b for b in benchmarks if not vanilla[b] > 0]
    if bad:
        raise ValueError(f"vanilla score must be positive to form a ratio: {[(b, vanilla[b]) for b in bad]}")
    ratios = {b: 100.0 * method[b] / vanilla[b] for b in benchmarks}
    return Retention(ratios=ratios, mean=sum(ratios.values()) / len(ratios))


def headline_scores(results: Mapping[str, Mapping[str, float]], require_complete: bool = True
                    ) -> dict[str, float]:
    """Picks each benchmark's headline out of its ``aggregate`` result.

    Args:
        results: benchmark name -> the dict its module's ``aggregate`` returned.
        require_complete: check that the fixed denominators are whole: MME scored on all 14 subtasks (P+C)
            and POPE on its 3 categories.
    """
    from stepprune.benchmarks import get_benchmark  # the registry imports this module

    out = {}
    for name, metrics in results.items():
        module = get_benchmark(name)
        if require_complete and name == "mme":
            absent = [s for s in module.PERCEPTION + module.COGNITION if s not in metrics]
            if absent:
                raise ValueError(f"MME result lacks subtasks {absent}: its P+C total would not be comparable")
        if require_complete and name == "pope":
            absent = [c for c in module.CATEGORIES if f"{c}/f1" not in metrics]
            if absent:
                raise ValueError(f"POPE result lacks categories {absent}: f1_mean must cover all three")
        out[name] = metrics[module.HEADLINE]
    return out
