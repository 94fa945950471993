"""VQAv2 on COCO val2014 (the offline stand-in for test-dev): reader and the lmms-eval val soft accuracy.

On-disk layout (the folder passed to :func:`load`)::

    vqav2/v2_OpenEnded_mscoco_val2014_questions.json  # {..., questions: [{image_id, question, question_id}]}
    vqav2/v2_mscoco_val2014_annotations.json   # {..., annotations: [{question_id, image_id, question_type,
                                               #   answer_type, multiple_choice_answer,
                                               #   answers: [{answer, answer_confidence, answer_id} x10]}]}
    vqav2/val2014/COCO_val2014_<12-digit image_id>.jpg

``split`` (default ``val2014``) names the three paths above. ``limit`` keeps the first questions in file order.
Prompt (LLaVA-1.5): ``question + "\\nAnswer the question using a single word or phrase."``.

Scoring. LLaVA's own VQAv2 number comes from the EvalAI test-dev server, which has no local equivalent, so
the local score in *both* flavours is lmms-eval 0.7.3's ``vqav2_val`` rule (the number is therefore not
comparable to the 78.5 of papers: the split changed):

* prediction: newlines/tabs to spaces, strip, punctuation, periods, digits/articles/contractions (steps 2-5 of
  :mod:`stepprune.benchmarks.vqa_eval`, no tokenise step, so ``'s`` is not split off);
* each reference answer: the same steps;
* leave-one-out soft accuracy, where "leave one out" drops the answer *records* equal to the current one
  (records carry ``answer_id``, so exactly one is dropped).

``details(...)["llava_submission_answer"]`` and :func:`submission` give what LLaVA's
``convert_vqav2_for_submission.py`` would upload (the full EvalAI processor; ``""`` for a missing answer), e.g.
``"Yes, it is."`` -> ``"yes it is"`` and ``"man's"`` -> ``"man 's"``. A missing prediction scores 0 and is
counted in ``missing``.
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
    get_field,
    limit_reached,
    percent,
    read_json,
)
from stepprune.benchmarks.vqa_eval import normalize, normalize_vqav2_lmms

NAME = "vqav2"
HEADLINE = "accuracy"
DEFAULT_SPLIT = "val2014"


def _annotations(path: Path) -> dict[int, tuple[int, dict[str, Any]]]:
    """question_id -> (row, annotation), with each answer record checked."""
    records = get_field(read_json(path), "annotations", list, path, 0)
    out = {}
    for row, record in enumerate(records):
        qid = get_field(record, "question_id", int, path, row)
        answers = get_field(record, "answers", list, path, row)
        if not answers:
            raise RecordError(path, row, "answers", "empty")
        for answer in answers:
            get_field(answer, "answer", str, path, row)
        out[qid] = (row, record)
    return out


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Reads VQAv2 questions joined with their annotations.

    Args:
        folder: the ``vqav2/`` folder.
        split: the COCO split name in the file names (default ``val2014``).
        limit: keep the first ``limit`` questions.
    """
    folder = Path(folder)
    split = split or DEFAULT_SPLIT
    questions_path = folder / f"v2_OpenEnded_mscoco_{split}_questions.json"
    annotations_path = folder / f"v2_mscoco_{split}_annotations.json"
    questions = get_field(read_json(questions_path), "questions", list, questions_path, 0)
    annotations = _annotations(annotations_path)
    items = []
    for row, record in enumerate(questions):
        if limit_reached(len(items), limit):
            break
        qid = get_field(record, "question_id", int, questions_path, row)
        image_id = get_field(record, "image_id", int, questions_path, row)
        question = get_field(record, "question", str, questions_path, row)
        if qid not in annotations:
            raise RecordError(questions_path, row, "question_id", f"no annotation for question {qid} in "
                              f"{annotations_path.name}")
        _, annotation = annotations[qid]
        image_path = folder / split / f"COCO_{split}_{image_id:012d}.jpg"
        if not image_path.is_file():
            raise RecordError(questions_path, row, "image_id", f"image not found: {image_path}")
        items.append(BenchmarkItem(
            qid=str(qid),
            prompt=question + SHORT_ANSWER,
            answer=[a["answer"] for a in annotation["answers"]],
            image_path=image_path,
            meta={"question_id": qid, "image_id": image_id, "answer_records": annotation["answers"],
                  "answer_type": annotation.get("answer_type"), "question_type": annotation.get("question_type"),
                  "multiple_choice_answer": annotation.get("multiple_choice_answer")},
        ))
    return items


def lmms_val_accuracy(prediction: str, answer_records: Sequence[dict[str, Any]]) -> float:
    """lmms-eval's ``vqav2_process_results`` accuracy of one raw prediction against the answer records."""
    pred = normalize_vqav2_lmms(prediction)
    refs = [{**rec, "answer": normalize_vqav2_lmms(rec["answer"])} for rec in answer_records]
    per_drop = []
    for rec in refs:
        # Records equal to the dropped one all leave (dict equality, as lmms-eval): normally just itself.
        matches = sum(other["answer"] == pred for other in refs if other != rec)
        per_drop.append(min(1.0, matches / 3))
    return sum(per_drop) / len(per_drop)


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """``{"normalized": ..., "llava_submission_answer": ..., "score": ...}`` for one question."""
    check_flavour(flavour)
    if prediction is None:
        return {"normalized": None, "llava_submission_answer": "", "score": 0.0}
    return {"normalized": normalize_vqav2_lmms(prediction), "llava_submission_answer": normalize(prediction),
            "score": lmms_val_accuracy(prediction, item.meta["answer_records"])}


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """The VQA soft accuracy in [0, 1] (the lmms-eval val rule in both flavours)."""
    return details(prediction, item, flavour)["score"]


def submission(items: Sequence[BenchmarkItem], predictions: Sequence[str | None]) -> list[dict[str, Any]]:
    """The ``[{question_id, answer}]`` list LLaVA's converter would upload to EvalAI."""
    return [{"question_id": item.meta["question_id"], "answer": "" if pred is None else normalize(pred)}
            for item, pred in zip(items, predictions, strict=True)]


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str = "llava"
              ) -> dict[str, float]:
    """Soft accuracy (%) overall and per answer type.

    Returns:
        ``accuracy``, ``answer_type/<yes/no|number|other>``, ``n``, ``missing``.
    """
    check_aligned(items, predictions, flavour)
    per_type: dict[str, list[float]] = defaultdict(list)
    scores = []
    for item, pred in zip(items, predictions):
        scores.append(score_one(pred, item, flavour))
        if item.meta.get("answer_type"):
            per_type[item.meta["answer_type"]].append(scores[-1])
    out = {"accuracy": percent(sum(scores), len(scores))}
    out.update({f"answer_type/{t}": percent(sum(v), len(v)) for t, v in sorted(per_type.items())})
    out.update(n=float(len(items)), missing=float(sum(p is None for p in predictions)))
    return out
