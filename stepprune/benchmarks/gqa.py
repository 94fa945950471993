"""GQA (testdev-balanced): reader and the official exact-match scorer.

On-disk layout (the folder passed to :func:`load`)::

    gqa/
      testdev_balanced_questions.json   # {qid: {question, answer, fullAnswer, imageId, isBalanced, types,
                                        #        groups, semantic, semanticStr, ...}}
      images/<imageId>.jpg              # .png accepted too

``load(folder, split)`` reads ``<split>_questions.json`` (default split ``testdev_balanced``); ``limit`` keeps
the first questions in file order. Prompt (LLaVA-1.5): ``question + "\\nAnswer the question using a single word
or phrase."``.

Scoring:

* ``llava``: LLaVA's ``convert_gqa_for_eval.py`` turns the answer into ``text.rstrip('.').lower()`` and
  Stanford's ``eval.py`` compares it with ``answer`` by plain string equality (no strip, no article or number
  handling), averaged over questions with ``isBalanced``. Also reported, as ``eval.py`` prints them:
  ``binary`` / ``open`` accuracy (open = structural type ``query``).
* ``lmms``: the stripped prediction vs the answer, both lowercased and with all of ``string.punctuation``
  deleted (``exact_match`` with ``ignore_case`` and ``ignore_punctuation``).

Crash guarded: ``eval.py`` raises when a balanced question has no prediction. Here a missing prediction
(None) scores 0 and ``missing_balanced`` counts them, so a partial run is visible instead of fatal.
Predictions are the text as LLaVA's runner writes it (already ``.strip()``-ped there).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks.base import BenchmarkItem, check_flavour
from stepprune.benchmarks.common import (
    SHORT_ANSWER,
    check_aligned,
    find_image,
    get_field,
    limit_reached,
    percent,
    read_json,
)

NAME = "gqa"
HEADLINE = "accuracy"
DEFAULT_SPLIT = "testdev_balanced"

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Reads ``<split>_questions.json`` into items, in file order.

    Args:
        folder: the ``gqa/`` folder.
        split: the question-file prefix (default ``testdev_balanced``).
        limit: keep only the first ``limit`` questions.
    """
    folder = Path(folder)
    path = folder / f"{split or DEFAULT_SPLIT}_questions.json"
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping question ids to questions")
    items = []
    for qid, record in data.items():
        if limit_reached(len(items), limit):
            break
        question = get_field(record, "question", str, path, qid)
        answer = get_field(record, "answer", str, path, qid)
        image_id = get_field(record, "imageId", str, path, qid)
        balanced = get_field(record, "isBalanced", bool, path, qid)
        types = record.get("types") or {}
        items.append(BenchmarkItem(
            qid=str(qid),
            prompt=question + SHORT_ANSWER,
            answer=answer,
            image_path=find_image(folder / "images", image_id, path, qid, "imageId"),
            meta={"image_id": image_id, "is_balanced": balanced,
                  "structural": types.get("structural"), "semantic": types.get("semantic")},
        ))
    return items


def _lmms_clean(text: str) -> str:
    return text.lower().translate(_NO_PUNCTUATION)


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """What the official scorer compares: ``{"compared": <processed prediction>, "gold": ..., "score": ...}``."""
    if prediction is None:
        return {"compared": None, "gold": item.answer, "score": 0.0}
    if flavour == "llava":
        compared, gold = prediction.rstrip(".").lower(), item.answer
    else:
        compared, gold = _lmms_clean(prediction.strip()), _lmms_clean(item.answer)
    return {"compared": compared, "gold": gold, "score": float(compared == gold)}


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """1.0 when the processed prediction equals the answer (see the module docstring), else 0.0."""
    check_flavour(flavour)
    return details(prediction, item, flavour)["score"]


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str = "llava"
              ) -> dict[str, float]:
    """Accuracy (%) over balanced questions, plus binary/open splits and the missing-prediction count.

    Returns:
        ``accuracy``, ``binary``, ``open`` (percent), ``n`` (balanced questions scored),
        ``missing_balanced`` (balanced questions with no prediction; the official script would have raised).
    """
    check_aligned(items, predictions, flavour)
    sums = {"accuracy": [0.0, 0], "binary": [0.0, 0], "open": [0.0, 0]}
    missing = 0
    for item, pred in zip(items, predictions):
        if not item.meta.get("is_balanced", True):
            continue
        missing += pred is None
        score = details(pred, item, flavour)["score"]
        kind = "open" if item.meta.get("structural") == "query" else "binary"
        for key in ("accuracy", kind):
            sums[key][0] += score
            sums[key][1] += 1
    out = {key: percent(total, count) for key, (total, count) in sums.items()}
    out.update(n=float(sums["accuracy"][1]), missing_balanced=float(missing))
    return out
