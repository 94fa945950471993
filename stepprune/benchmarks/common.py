"""Helpers every benchmark reader and scorer shares: LLaVA-1.5's answer-format suffixes, checked reads of
JSON / JSON Lines records that fail with :class:`~stepprune.benchmarks.base.RecordError`, image lookup, and
the small arithmetic the aggregates use.

Row conventions in :class:`RecordError` messages: for a JSON object keyed by id (GQA, ScienceQA) the row is
the key; for a JSON array it is the 0-based index in that array; for line-based files (JSON Lines, TSV, MME's
``.txt``) it is the 1-based line number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks.base import BenchmarkItem, RecordError, check_flavour

# LLaVA-1.5's answer-format instructions, appended to the question (``scripts/v1_5/eval/*.sh`` and the
# question files in LLaVA's eval.zip).
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


def read_json(path: Path) -> Any:
    """Parses a whole JSON file.

    Raises:
        FileNotFoundError: the file does not exist (the message names the expected path).
        RecordError: the file is not valid JSON (row = the line of the syntax error).
    """
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(path, e.lineno, "<json>", f"invalid JSON: {e.msg}") from None


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Parses a JSON Lines file into ``(line number, object)`` pairs, skipping blank lines."""
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(path, line_no, "<json>", f"invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise RecordError(path, line_no, "<json>", f"expected a JSON object, got {type(obj).__name__}")
        rows.append((line_no, obj))
    return rows


def get_field(record: Any, name: str, kind: type | tuple[type, ...], file: Path, row: int | str) -> Any:
    """``record[name]``, checked to exist and to be of ``kind``.

    ``bool`` is never accepted where ``int`` is asked for (JSON ``true`` is not a question id).
    """
    if not isinstance(record, dict):
        raise RecordError(file, row, name, f"record is a {type(record).__name__}, not a JSON object")
    if name not in record:
        raise RecordError(file, row, name, "missing")
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise RecordError(file, row, name, f"expected {wanted}, got {type(value).__name__} {value!r:.60}")
    return value


def find_image(folder: Path, stem: str, file: Path, row: int | str, field: str) -> Path:
    """The image ``folder/<stem>.<jpg|png|jpeg>`` (``stem`` may already carry its suffix).

    Raises:
        RecordError: no such image, naming the record that points at it.
    """
    direct = folder / stem
    if direct.suffix in IMAGE_SUFFIXES and direct.is_file():
        return direct
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise RecordError(file, row, field, f"image not found: {folder / stem}[.jpg|.png]")


def limit_reached(count: int, limit: int | None) -> bool:
    """Whether ``count`` units already fill ``limit`` (never, when ``limit`` is None)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    return limit is not None and count >= limit


def check_aligned(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str) -> None:
    """Validates an ``aggregate`` call: a known flavour and one prediction (or None) per item."""
    check_flavour(flavour)
    if len(items) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(items)} items; they must be aligned "
                         "(use None for a missing prediction)")
    if not items:
        raise ValueError("cannot aggregate an empty benchmark")


def percent(numerator: float, denominator: float) -> float:
    """100 * numerator / denominator, and 0.0 for an empty denominator (callers flag that case)."""
    return 100.0 * numerator / denominator if denominator else 0.0
