"""MMBench dev (English, registered as ``mmbench_en``; :mod:`stepprune.benchmarks.mmbench_cn` is the Chinese
one): TSV reader, LLaVA-1.5 prompts and CircularEval scoring.

On-disk layout (the folder passed to :func:`load`)::

    mmbench_en/mmbench_dev_20230712.tsv       # or mmbench_cn/mmbench_dev_cn_20231003.tsv
    # any single .tsv in the folder is accepted too

Columns: ``index, question, hint, A, B, C, D, answer, category, image (base64), source, l2-category, comment,
split``. A missing option or hint is empty, ``nan`` or ``none`` (LLaVA's ``is_none``, case-insensitive).
Circular copies are rows with index ``base + k * 1_000_000`` and rotated options. An ``image`` cell holding
only another row's index (VLMEvalKit's space-saving form) is resolved to that row's image.

``split`` filters on the ``split`` column (None keeps every row). ``limit`` keeps the first ``limit`` *base*
questions in file order together with all their circular copies, so every kept group is complete.

Prompts:

* LLaVA-1.5 (``model_vqa_mmbench --single-pred-prompt``): ``[hint + "\\n"] + question + "\\nA. ..." ...`` (options
  up to the first missing one) + ``"\\nAnswer with the option's letter from the given choices directly."``
  (CN: ``"\\n请直接回答选项字母。"``). This is ``item.prompt``.
* lmms-eval: ``"[hint ]question There are several options:\\nA. ...\\nB. ...\\n" + "\\n<instruction>"`` (CN header
  ``有如下几个选项：`` and instruction ``请直接使用所提供的选项字母作为答案回答。``), in
  ``item.meta["prompt_lmms"]``.

Scoring (CircularEval): rows are grouped by ``index % 1_000_000``; a base question scores 1 only if every copy
resolves to its own correct letter. Accuracy is over base questions.

* ``llava`` (OpenCompass server grading, run offline): the rule-based prefetch
  (:func:`stepprune.benchmarks.mmbench_rules.can_infer`). The official grader sends unresolved answers to an LLM
  judge; we call none. ``circular_accuracy`` counts them wrong, ``circular_accuracy_upper`` counts them right
  (the judge can only move the score between the two), and ``judge_needed`` is the share of rows needing it.
* ``lmms`` (``mmbench_*_dev_static``): the stripped prediction through the prefetch, then lmms-eval's static
  extractor for the rest. ``judge_needed`` still reports how many rows the prefetch alone could not resolve.

A missing prediction (None) fails its group and is counted in ``missing``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks.base import BenchmarkItem, RecordError, check_flavour
from stepprune.benchmarks.common import LETTER_ANSWER, check_aligned, limit_reached, percent
from stepprune.benchmarks.mmbench_rules import can_infer, extract_static

NAME = "mmbench_en"
HEADLINE = "circular_accuracy"

CIRCULAR_STRIDE = 1_000_000
LETTERS = "ABCD"
FILES = {"en": "mmbench_dev_20230712.tsv", "cn": "mmbench_dev_cn_20231003.tsv"}
INSTRUCTION = {"en": LETTER_ANSWER, "cn": "\n请直接回答选项字母。"}
LMMS_INSTRUCTION = {"en": LETTER_ANSWER, "cn": "\n请直接使用所提供的选项字母作为答案回答。"}
LMMS_OPTIONS_HEADER = {"en": "There are several options:", "cn": "有如下几个选项："}
REQUIRED_COLUMNS = ("index", "question", "A", "B", "answer", "image")


def is_none(value: str | None) -> bool:
    """LLaVA's test for a missing hint or option: empty (pandas NaN), ``nan`` or ``none``."""
    return value is None or value.strip() == "" or value.strip().lower() in ("nan", "none")


def find_tsv(folder: Path, lang: str) -> Path:
    """The official TSV for ``lang``, or the folder's only ``.tsv``."""
    official = folder / FILES[lang]
    if official.is_file():
        return official
    tsvs = sorted(folder.glob("*.tsv"))
    if len(tsvs) == 1:
        return tsvs[0]
    raise FileNotFoundError(f"{folder}: expected {FILES[lang]} or exactly one .tsv file, found "
                            f"{[p.name for p in tsvs]}")


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` pairs; base64 images make cells far larger than csv's default limit."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RecordError(path, 1, missing[0], f"missing column (header: {reader.fieldnames})")
        return [(reader.line_num, row) for row in reader]


def _index(row: dict[str, str], path: Path, line: int) -> int:
    try:
        return int(float(row["index"]))  # pandas may have written "12.0"
    except (TypeError, ValueError):
        raise RecordError(path, line, "index", f"not an integer: {row['index']!r}") from None


def _build_item(row: dict[str, str], index: int, image: bytes, lang: str, path: Path, line: int
                ) -> BenchmarkItem:
    options = {c: row[c] for c in LETTERS if not is_none(row.get(c))}
    answer = (row["answer"] or "").strip()
    if answer not in options:
        raise RecordError(path, line, "answer", f"{answer!r} is not one of the options {sorted(options)}")
    # LLaVA stops at the first missing option; lmms-eval lists every present one.
    contiguous = []
    for c in LETTERS:
        if c not in options:
            break
        contiguous.append(c)
    hint, question = row.get("hint"), row["question"]
    if not question:
        raise RecordError(path, line, "question", "missing or empty")
    prompt = question if is_none(hint) else f"{hint}\n{question}"
    prompt += "".join(f"\n{c}. {options[c]}" for c in contiguous) + INSTRUCTION[lang]
    lmms_options = LMMS_OPTIONS_HEADER[lang] + "".join(f"\n{c}. {options[c]}" for c in sorted(options))
    lmms_prompt = f"{question} {lmms_options}" if is_none(hint) else f"{hint} {question} {lmms_options}"
    return BenchmarkItem(
        qid=str(index),
        prompt=prompt,
        answer=answer,
        image_bytes=image,
        meta={"index": index, "group": index % CIRCULAR_STRIDE, "options": options, "lang": lang,
              "category": row.get("category") or "", "l2_category": row.get("l2-category") or "",
              "split": row.get("split") or "", "prompt_lmms": f"{lmms_prompt}\n{LMMS_INSTRUCTION[lang]}"},
    )


def load(folder: str | Path, split: str | None = None, limit: int | None = None, lang: str = "en"
         ) -> list[BenchmarkItem]:
    """Reads an MMBench dev TSV (circular copies included), in file order.

    Args:
        folder: the ``mmbench_en/`` or ``mmbench_cn/`` folder.
        split: keep only rows whose ``split`` column equals this (None: all rows).
        limit: keep the first ``limit`` base questions and all their circular copies.
        lang: ``"en"`` or ``"cn"`` (file name and prompt language).
    """
    if lang not in FILES:
        raise ValueError(f"lang must be one of {sorted(FILES)}, got {lang!r}")
    path = find_tsv(Path(folder), lang)
    rows = [(line, row, _index(row, path, line)) for line, row in _read_rows(path)]
    if split is not None:
        rows = [r for r in rows if (r[1].get("split") or "") == split]
    kept_groups: set[int] = set()
    for _, _, index in rows:
        if index < CIRCULAR_STRIDE and not limit_reached(len(kept_groups), limit):
            kept_groups.add(index)
    images = {index: row["image"] for _, row, index in rows}
    items = []
    for line, row, index in rows:
        if index % CIRCULAR_STRIDE not in kept_groups:
            continue
        cell = (row["image"] or "").strip()
        if len(cell) < 16 and cell.isdigit() and int(cell) in images:  # a reference to another row's image
            cell = images[int(cell)].strip()
        try:
            image = base64.b64decode(cell, validate=True)
        except (binascii.Error, ValueError):
            raise RecordError(path, line, "image", "not valid base64") from None
        if not image:
            raise RecordError(path, line, "image", "empty")
        items.append(_build_item(row, index, image, lang, path, line))
    return items


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """How one row is resolved.

    Returns:
        ``rule_based_prefetch`` (letter or None = the LLM judge would be needed), ``static`` (lmms only: the
        static extractor's letter or ""), ``resolved`` (the letter used for scoring, or None) and ``score``.
    """
    check_flavour(flavour)
    out: dict[str, Any] = {"rule_based_prefetch": None, "static": None, "resolved": None, "score": 0.0}
    if prediction is None:
        return out
    text = prediction.strip() if flavour == "lmms" else prediction
    out["rule_based_prefetch"] = out["resolved"] = can_infer(text, item.meta["options"])
    if out["resolved"] is None and flavour == "lmms":
        out["static"] = extract_static(text, sorted(item.meta["options"]))
        out["resolved"] = out["static"] or None
    out["score"] = float(out["resolved"] == item.answer)
    return out


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """1.0 when this row resolves to its correct letter (the group verdict needs every copy: see aggregate)."""
    return details(prediction, item, flavour)["score"]


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str = "llava"
              ) -> dict[str, float]:
    """CircularEval accuracy (%) over the base questions present in ``items``.

    Returns:
        ``circular_accuracy``, ``circular_accuracy_upper`` (llava: judge-needed rows counted right; lmms: equal
        to ``circular_accuracy``), ``judge_needed``
        (% of rows the rule-based prefetch could not resolve), ``row_accuracy`` (% of rows resolved
        correctly), ``category/<name>`` circular accuracies, ``n`` (base questions), ``missing``.
    """
    check_aligned(items, predictions, flavour)
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    bases: dict[int, BenchmarkItem] = {}
    for item, pred in zip(items, predictions):
        groups[item.meta["group"]].append({**details(pred, item, flavour), "missing": pred is None})
        if item.meta["index"] < CIRCULAR_STRIDE:
            bases[item.meta["group"]] = item
    hits = hits_upper = 0
    per_category: dict[str, list[int]] = defaultdict(list)
    for group, base in bases.items():
        copies = groups[group]
        all_right = all(r["score"] == 1.0 for r in copies)
        # In llava flavour an unresolved row could still be saved by the judge, unless a resolved copy is
        # already wrong; in lmms flavour the static extractor has had the last word.
        savable = all(r["score"] == 1.0 or (flavour == "llava" and r["resolved"] is None and not r["missing"])
                      for r in copies)
        hits += all_right
        hits_upper += savable
        per_category[base.meta["category"]].append(int(all_right))
    rows = [r for copies in groups.values() for r in copies]
    out = {
        "circular_accuracy": percent(hits, len(bases)),
        "circular_accuracy_upper": percent(hits_upper, len(bases)),
        "judge_needed": percent(sum(r["rule_based_prefetch"] is None and not r["missing"] for r in rows),
                                len(rows)),
        "row_accuracy": percent(sum(r["score"] for r in rows), len(rows)),
        "n": float(len(bases)),
        "missing": float(sum(r["missing"] for r in rows)),
    }
    out.update({f"category/{c}": percent(sum(v), len(v)) for c, v in sorted(per_category.items()) if c})
    return out
