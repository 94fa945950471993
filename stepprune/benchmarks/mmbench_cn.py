"""MMBench-CN dev, registered as ``mmbench_cn``: the reader of :mod:`stepprune.benchmarks.mmbench` in Chinese.

On-disk layout (the folder passed to :func:`load`)::

    mmbench_cn/mmbench_dev_cn_20231003.tsv    # or the folder's only .tsv; the same columns as MMBench-EN

Prompts: LLaVA-1.5 ends with ``"\\n请直接回答选项字母。"``; lmms-eval (``meta["prompt_lmms"]``) uses the
header ``有如下几个选项：`` and the instruction ``"\\n请直接使用所提供的选项字母作为答案回答。"``. Scoring is
the same CircularEval, rule-based prefetch and static extractor; see :mod:`stepprune.benchmarks.mmbench` for
the rules and the guards.
"""

from __future__ import annotations

from pathlib import Path

from stepprune.benchmarks import mmbench
from stepprune.benchmarks.base import BenchmarkItem
from stepprune.benchmarks.mmbench import aggregate, details, score_one

NAME = "mmbench_cn"
HEADLINE = mmbench.HEADLINE

__all__ = ["NAME", "HEADLINE", "load", "score_one", "aggregate", "details"]


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Reads the MMBench-CN dev TSV; arguments as :func:`stepprune.benchmarks.mmbench.load`."""
    return mmbench.load(folder, split=split, limit=limit, lang="cn")
