"""SynthVQA's long-answer description task as its own benchmark split, registered as ``synthvqa_describe``: the
benchmark of decode-time experiments (DyRate-style pruning acts while an answer is generated, so it needs answers
of dozens of tokens, not one word).

On-disk layout: the SynthVQA native layout read by :mod:`stepprune.benchmarks.synthvqa` (``<split>/questions.jsonl``
+ ``images/``); only the ``describe`` family is kept ("Describe the image in detail.", one per image, with a
templated reference and its list of mentions).

Score: mention recall, the share of the reference's mentions ("large red star", '"lamp"') found in the
prediction, with multiplicity (:func:`stepprune.benchmarks.synthvqa.score_one`); ``aggregate`` reports it as
``describe`` (the headline) and ``describe/detail``, with the count ``n/describe``. Generate with a long budget:
:data:`MAX_NEW_TOKENS` (256) covers the longest references (generator defaults: median ~90 words, max ~170,
about 1.3 Llama tokens per word; the eval configs use it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stepprune.benchmarks import synthvqa
from stepprune.benchmarks.base import BenchmarkItem
from stepprune.benchmarks.synthvqa import details, score_one

NAME = "synthvqa_describe"
HEADLINE = "describe"
FAMILY = "describe"
MAX_NEW_TOKENS = 256

__all__ = ["NAME", "HEADLINE", "MAX_NEW_TOKENS", "load", "score_one", "aggregate", "details"]


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """The ``describe`` items of a SynthVQA split; arguments as :func:`stepprune.benchmarks.synthvqa.load`."""
    return synthvqa.load(folder, split=split, limit=limit, families=FAMILY)


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None],
              flavour: str = "llava") -> dict[str, float]:
    """Mean mention recall (``describe``), per subfamily and the count; every item must be a describe item."""
    other = sorted({it.meta["family"] for it in items} - {FAMILY})
    if other:
        raise ValueError(f"{NAME}: items of other families {other}; load them with synthvqa_describe.load")
    out = synthvqa.aggregate(items, predictions, flavour)
    return {k: v for k, v in out.items() if k.split("/")[-1] != synthvqa.HEADLINE}  # no empty accuracy "overall"
