"""TextVQA (val): reader with Rosetta OCR tokens in the prompt, and the m4c soft accuracy.

On-disk layout (the folder passed to :func:`load`)::

    textvqa/TextVQA_0.5.1_val.json               # {dataset_name, dataset_version, data: [{question_id,
                                                 #    question, image_id, answers[10], ...}]}
    textvqa/TextVQA_Rosetta_OCR_v0.2_val.json    # {data: [{image_id, ocr_tokens: [...]}, ...]}
    textvqa/train_images/<image_id>.jpg          # val images live in train_images/

``split`` (default ``val``) names both JSON files; ``limit`` keeps the first questions in file order.

Prompt (LLaVA-1.5, ``llava_textvqa_val_v051_ocr.jsonl``), always exactly three lines because
``eval_textvqa.py`` asserts on the line count::

    <question>\\nReference OCR token: <tok1>, <tok2>, ...\\nAnswer the question using a single word or phrase.

An image without OCR tokens gets ``"Reference OCR token: "`` (empty list). lmms-eval's default ``textvqa_val``
prompt has no OCR tokens (``question.capitalize()`` + the same instruction); it is in
``item.meta["prompt_lmms"]``. Keep one prompt fixed for a vanilla-vs-pruned comparison.

Scoring: the full EvalAI processor on the prediction and on each of the 10 answers, then the leave-one-out
soft accuracy (:mod:`stepprune.benchmarks.vqa_eval`); LLaVA (m4c) and lmms-eval agree. One LLaVA quirk is
reproduced: ``eval_textvqa.py`` looks annotations up by ``(image_id, question.lower())``, so when a question is
repeated on an image the *last* annotation in the file supplies the answers for all of them
(``item.meta["llava_answers"]``, present only where that differs). A missing prediction scores 0.
"""

from __future__ import annotations

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
    read_json,
)
from stepprune.benchmarks.vqa_eval import normalize, soft_accuracy

NAME = "textvqa"
HEADLINE = "accuracy"
DEFAULT_SPLIT = "val"
OCR_PREFIX = "Reference OCR token: "


def _ocr_tokens(path: Path) -> dict[str, list[str]]:
    out = {}
    for row, record in enumerate(get_field(read_json(path), "data", list, path, 0)):
        image_id = get_field(record, "image_id", str, path, row)
        tokens = get_field(record, "ocr_tokens", list, path, row)
        if not all(isinstance(t, str) and "\n" not in t for t in tokens):
            raise RecordError(path, row, "ocr_tokens", "expected a list of single-line strings")
        out[image_id] = tokens
    return out


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Reads TextVQA questions with their OCR tokens.

    Args:
        folder: the ``textvqa/`` folder.
        split: the split in the file names (default ``val``).
        limit: keep the first ``limit`` questions.
    """
    folder = Path(folder)
    split = split or DEFAULT_SPLIT
    path = folder / f"TextVQA_0.5.1_{split}.json"
    ocr_path = folder / f"TextVQA_Rosetta_OCR_v0.2_{split}.json"
    records = get_field(read_json(path), "data", list, path, 0)
    ocr = _ocr_tokens(ocr_path)
    image_dir = folder / ("train_images" if split in ("train", "val") else f"{split}_images")
    # LLaVA's lookup key -> the answers of the last annotation carrying it (over the whole file).
    by_key = {(r.get("image_id"), str(r.get("question", "")).lower()): r.get("answers") for r in records
              if isinstance(r, dict)}
    items = []
    for row, record in enumerate(records):
        if limit_reached(len(items), limit):
            break
        qid = get_field(record, "question_id", (int, str), path, row)
        question = get_field(record, "question", str, path, row)
        image_id = get_field(record, "image_id", str, path, row)
        answers = get_field(record, "answers", list, path, row)
        if not answers or not all(isinstance(a, str) for a in answers):
            raise RecordError(path, row, "answers", "expected a non-empty list of strings")
        if "\n" in question:
            raise RecordError(path, row, "question", "contains a newline (LLaVA's scorer needs 3 prompt lines)")
        if image_id not in ocr:
            raise RecordError(path, row, "image_id", f"no OCR entry for image {image_id} in {ocr_path.name}")
        meta = {"question_id": qid, "image_id": image_id, "ocr_tokens": ocr[image_id],
                "prompt_lmms": question.capitalize() + SHORT_ANSWER}
        if by_key[(image_id, question.lower())] != answers:
            meta["llava_answers"] = by_key[(image_id, question.lower())]
        items.append(BenchmarkItem(
            qid=str(qid),
            prompt=f"{question}\n{OCR_PREFIX}{', '.join(ocr[image_id])}{SHORT_ANSWER}",
            answer=answers,
            image_path=find_image(image_dir, image_id, path, row, "image_id"),
            meta=meta,
        ))
    return items


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """``{"normalized": ..., "score": ...}`` for one question."""
    check_flavour(flavour)
    if prediction is None:
        return {"normalized": None, "score": 0.0}
    answers = item.meta.get("llava_answers", item.answer) if flavour == "llava" else item.answer
    pred = normalize(prediction)
    return {"normalized": pred, "score": soft_accuracy(pred, [normalize(a) for a in answers])}


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """The VQA soft accuracy in [0, 1]."""
    return details(prediction, item, flavour)["score"]


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str = "llava"
              ) -> dict[str, float]:
    """Soft accuracy (%). Returns ``accuracy``, ``n``, ``missing``."""
    check_aligned(items, predictions, flavour)
    scores = [score_one(p, it, flavour) for it, p in zip(items, predictions)]
    return {"accuracy": percent(sum(scores), len(scores)), "n": float(len(items)),
            "missing": float(sum(p is None for p in predictions))}
