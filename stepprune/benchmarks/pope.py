"""POPE (COCO; random / popular / adversarial): reader of the label files and LLaVA's ``eval_pope.py`` scoring.

On-disk layout (the folder passed to :func:`load`)::

    pope/coco/coco_pope_random.json         # JSON Lines: {question_id, image, text, label: yes|no[, image_id]}
    pope/coco/coco_pope_popular.json
    pope/coco/coco_pope_adversarial.json
    pope/val2014/<image>                    # COCO val2014 images named by the "image" field

``split``: None (the three categories, in the order random, popular, adversarial) or one category name.
``limit``: the first ``limit`` questions *of each category*. Prompt (LLaVA-1.5): ``text + "\\nAnswer the
question using a single word or phrase."``.

Scoring, per category, with "yes" as the positive class: accuracy, precision, recall, F1 and yes-ratio (all in
percent). The headline ``f1_mean`` is the mean F1 over the categories present (the usual LLaVA convention for
the single "POPE" number, 85.9 for LLaVA-1.5-7B).

* ``llava`` (``eval_pope.py``): keep the text before the first ".", delete commas, split on single spaces; the
  answer is "no" if a word is ``No``, ``no`` or ``not``, else "yes" (so "", "NO", "Nope" and "No,there" are
  yes, and "Yes. But there is no dog" is yes).
* ``lmms`` (``pope/utils.py``): ``pred.lower().strip()`` must be exactly "yes" or "no" ("Yes." is wrong).
  Unparseable answers count wrong in accuracy but are ignored by precision and recall; lmms-eval's
  ``yes_ratio`` is (a bug we reproduce) the share of *gold* "yes". ``all/*`` gives the pooled ``pope`` task.

Crash guarded: ``eval_pope.py`` divides without guards, so a model that never says "yes" raises
``ZeroDivisionError``. Here precision (and F1) are 0 for such a category, ``<category>/no_yes`` is 1 and
``no_yes_categories`` counts them. ``eval_pope.py`` zips answers with label lines by position; here predictions
are aligned with items, and a missing one (None) is left out of the metrics and counted in ``missing``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks.base import BenchmarkItem, RecordError, check_flavour
from stepprune.benchmarks.common import (
    SHORT_ANSWER,
    check_aligned,
    find_image,
    get_field,
    limit_reached,
    percent,
    read_jsonl,
)

NAME = "pope"
HEADLINE = "f1_mean"
CATEGORIES = ("random", "popular", "adversarial")


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Reads the POPE label files into items.

    Args:
        folder: the ``pope/`` folder.
        split: None (all three categories) or ``random`` / ``popular`` / ``adversarial``.
        limit: keep the first ``limit`` questions of each category.
    """
    folder = Path(folder)
    if split is not None and split not in CATEGORIES:
        raise ValueError(f"unknown POPE category {split!r}; use one of {CATEGORIES} or None")
    items = []
    for category in CATEGORIES if split is None else (split,):
        path = folder / "coco" / f"coco_pope_{category}.json"
        for count, (line, record) in enumerate(read_jsonl(path)):
            if limit_reached(count, limit):
                break
            qid = get_field(record, "question_id", (int, str), path, line)
            text = get_field(record, "text", str, path, line)
            label = get_field(record, "label", str, path, line).strip().lower()
            if label not in ("yes", "no"):
                raise RecordError(path, line, "label", f"expected yes or no, got {label!r}")
            image = get_field(record, "image", str, path, line)
            items.append(BenchmarkItem(
                qid=f"{category}/{qid}",
                prompt=text + SHORT_ANSWER,
                answer=label,
                image_path=find_image(folder / "val2014", image, path, line, "image"),
                meta={"category": category, "question_id": qid, "image": image},
            ))
    return items


def parse_label(prediction: str | None, flavour: str = "llava") -> str | None:
    """"yes" / "no" as the official parser reads the answer; None when lmms-eval cannot parse it."""
    check_flavour(flavour)
    if prediction is None:
        return None
    if flavour == "lmms":
        text = prediction.lower().strip()
        return text if text in ("yes", "no") else None
    first_sentence = prediction.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if ("No" in words or "no" in words or "not" in words) else "yes"


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """``{"label": yes|no|None, "score": 0.0|1.0}`` for one question."""
    label = parse_label(prediction, flavour)
    return {"label": label, "score": float(label == item.answer)}


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """1.0 when the parsed answer equals the label."""
    return details(prediction, item, flavour)["score"]


def _metrics(pairs: list[tuple[str | None, str]], flavour: str) -> dict[str, float]:
    """acc / precision / recall / f1 / yes_ratio (percent) of (parsed, gold) pairs, never dividing by zero."""
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)  # unparseable (lmms) is neither positive nor negative
    correct = sum(p == g for p, g in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    yes_source = [g for _, g in pairs] if flavour == "lmms" else [p for p, _ in pairs]
    return {"acc": percent(correct, len(pairs)), "precision": 100 * precision, "recall": 100 * recall,
            "f1": 100 * f1, "yes_ratio": percent(sum(y == "yes" for y in yes_source), len(pairs)),
            "n": float(len(pairs)), "no_yes": float(tp + fp == 0)}


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str = "llava"
              ) -> dict[str, float]:
    """Per-category POPE metrics and the mean F1.

    Returns:
        ``<category>/{acc,precision,recall,f1,yes_ratio,n,no_yes}``, ``f1_mean``, ``no_yes_categories``,
        ``missing``; lmms flavour adds the pooled ``all/*`` and ``unparseable``.
    """
    check_aligned(items, predictions, flavour)
    by_category: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
    for item, pred in zip(items, predictions):
        if pred is not None:
            by_category[item.meta["category"]].append((parse_label(pred, flavour), item.answer))
    out: dict[str, float] = {}
    for category in [c for c in CATEGORIES if c in by_category] + sorted(set(by_category) - set(CATEGORIES)):
        out.update({f"{category}/{k}": v for k, v in _metrics(by_category[category], flavour).items()})
    f1s = [out[f"{c}/f1"] for c in by_category]
    out["f1_mean"] = sum(f1s) / len(f1s) if f1s else 0.0
    out["no_yes_categories"] = float(sum(out[f"{c}/no_yes"] for c in by_category))
    out["missing"] = float(sum(p is None for p in predictions))
    if flavour == "lmms":
        pooled = [pair for pairs in by_category.values() for pair in pairs]
        if pooled:
            out.update({f"all/{k}": v for k, v in _metrics(pooled, flavour).items()})
        out["unparseable"] = float(sum(p is None for p, _ in pooled))
    return out
