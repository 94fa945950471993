"""ScienceQA-IMG (the test problems that have an image): reader and LLaVA's ``eval_science_qa.py`` scoring.

On-disk layout (the folder passed to :func:`load`)::

    scienceqa/problems.json        # {pid: {question, choices[list], answer(int), hint, image(name or null),
                                   #   task, grade, subject, topic, category, skill, lecture, solution, split}}
    scienceqa/pid_splits.json      # {train, val, test, trainval, minitrain, minival, minitest: [pid, ...]}
    scienceqa/images/<split>/<pid>/image.png

``split`` (default ``test``) picks the pid list; only problems with an image are kept (ScienceQA-IMG), in the
list's order. ``limit`` keeps the first ``limit`` of those.

Prompt (LLaVA-1.5, ``llava_test_CQM-A.json`` + ``model_vqa_science --single-pred-prompt``):
``["Context: <hint>\\n"] + question + "\\nA. ...\\nB. ..."``, stripped, + ``"\\nAnswer with the option's letter
from the given choices directly."``. lmms-eval builds the same string (without the strip).

Scoring:

* ``llava``: the letter is the whole text if it is one of A-E; else the first character if it is in A-E and is
  followed by ". " (so "A." alone fails); else the single match of ``The answer is ([A-Z]).`` (any character
  after the letter is required); else FAILED. A letter beyond the problem's number of choices is wrong.
  IMG-Accuracy reproduces the official quirk: a missing prediction (None) leaves the IMG denominator (its
  prompt becomes "Unknown"), so ``img_accuracy`` is over answered problems; ``img_accuracy_missing_as_wrong``
  and ``missing`` show the effect.
* ``lmms`` (``scienceqa/utils.py``): the stripped prediction, lowercased, equals the letter; or its first
  character is uppercase, its second is ".", and the first matches. A missing prediction is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks.base import BenchmarkItem, RecordError, check_flavour
from stepprune.benchmarks.common import (
    LETTER_ANSWER,
    check_aligned,
    get_field,
    limit_reached,
    percent,
    read_json,
)

NAME = "scienceqa"
HEADLINE = "img_accuracy"
DEFAULT_SPLIT = "test"
LETTERS = "ABCDE"
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def _build_prompt(problem: dict[str, Any], choices: list[str]) -> str:
    hint = problem.get("hint") or ""
    context = f"Context: {hint}\n" if hint else ""
    options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
    return f"{context}{problem['question']}\n{options}".strip() + LETTER_ANSWER


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Reads the image problems of one ScienceQA split.

    Args:
        folder: the ``scienceqa/`` folder.
        split: a key of ``pid_splits.json`` (default ``test``).
        limit: keep the first ``limit`` image problems.
    """
    folder = Path(folder)
    split = split or DEFAULT_SPLIT
    problems_path, splits_path = folder / "problems.json", folder / "pid_splits.json"
    problems, splits = read_json(problems_path), read_json(splits_path)
    pids = get_field(splits, split, list, splits_path, split)
    items = []
    for pid in pids:
        if limit_reached(len(items), limit):
            break
        if str(pid) not in problems:
            raise RecordError(splits_path, split, str(pid), "pid not found in problems.json")
        problem = problems[str(pid)]
        image = get_field(problem, "image", (str, type(None)), problems_path, pid)
        if not image:
            continue  # not part of ScienceQA-IMG
        get_field(problem, "question", str, problems_path, pid)
        choices = get_field(problem, "choices", list, problems_path, pid)
        if not 2 <= len(choices) <= len(LETTERS) or not all(isinstance(c, str) for c in choices):
            raise RecordError(problems_path, pid, "choices", f"expected 2-5 strings, got {choices!r:.80}")
        answer = get_field(problem, "answer", int, problems_path, pid)
        if not 0 <= answer < len(choices):
            raise RecordError(problems_path, pid, "answer", f"index {answer} outside {len(choices)} choices")
        image_path = folder / "images" / split / str(pid) / image
        if not image_path.is_file():
            raise RecordError(problems_path, pid, "image", f"image not found: {image_path}")
        items.append(BenchmarkItem(
            qid=str(pid),
            prompt=_build_prompt(problem, choices),
            answer=LETTERS[answer],
            image_path=image_path,
            meta={"n_choices": len(choices), "answer_index": answer, "choices": choices,
                  "subject": problem.get("subject"), "grade": problem.get("grade")},
        ))
    return items


def extract_letter(prediction: str) -> str | None:
    """LLaVA's letter extraction; None is its "FAILED"."""
    if prediction in tuple(LETTERS):  # whole-text membership: "" and "AB" are not letters
        return prediction
    if len(prediction) >= 3 and prediction[0] in LETTERS and prediction[1:3] == ". ":
        return prediction[0]
    found = _ANSWER_IS.findall(prediction)
    return found[0] if len(found) == 1 else None


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """``{"letter": <the letter the scorer read, or None>, "score": 0.0|1.0}``."""
    check_flavour(flavour)
    if prediction is None:
        return {"letter": None, "score": 0.0}
    if flavour == "llava":
        letter = extract_letter(prediction)
        # The choice-count check: a letter beyond the problem's options is never right.
        valid = letter in tuple(LETTERS[: item.meta["n_choices"]])
        return {"letter": letter, "score": float(valid and letter == item.answer)}
    text = prediction.strip()
    if text.lower() == item.answer.lower():
        return {"letter": item.answer, "score": 1.0}
    if len(text) >= 2 and text[0].isupper() and text[1] == ".":
        return {"letter": text[0], "score": float(text[0] == item.answer)}
    return {"letter": None, "score": 0.0}


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """1.0 when the extracted letter is the correct option."""
    return details(prediction, item, flavour)["score"]


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str = "llava"
              ) -> dict[str, float]:
    """IMG-Accuracy (%).

    Returns:
        ``img_accuracy`` (llava: over answered problems, the official quirk; lmms: over all),
        ``img_accuracy_missing_as_wrong``, ``n``, ``missing``.
    """
    check_aligned(items, predictions, flavour)
    scores = [score_one(p, it, flavour) for it, p in zip(items, predictions)]
    missing = sum(p is None for p in predictions)
    answered = len(items) - missing if flavour == "llava" else len(items)
    return {"img_accuracy": percent(sum(scores), answered),
            "img_accuracy_missing_as_wrong": percent(sum(scores), len(items)),
            "n": float(len(items)), "missing": float(missing)}
