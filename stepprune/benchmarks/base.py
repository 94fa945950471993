"""What every benchmark module provides, and the item it yields.

One module per benchmark (``gqa.py``, ``mmbench.py``, ``mme.py``, ``pope.py``, ``scienceqa.py``, ``vqav2.py``,
``textvqa.py``, ``synthvqa.py``). Each module defines, at module level:

* ``NAME: str`` and ``HEADLINE: str`` (the key of :func:`aggregate`'s result that the paper's tables report);
* ``load(folder, split=None, limit=None) -> list[BenchmarkItem]``: reads the benchmark from its official on-disk
  layout, building LLaVA-1.5's prompt string for each item; a malformed record raises :class:`RecordError`
  naming the file, row and field;
* ``score_one(prediction, item, flavour="llava") -> float``: the per-item verdict of the official scorer;
* ``aggregate(items, predictions, flavour="llava") -> dict[str, float]``: the official aggregate, where
  ``predictions`` is aligned with ``items`` (``None`` = missing), since several official scripts depend on order.

``flavour`` is ``"llava"`` (LLaVA's own eval scripts, the default) or ``"lmms"`` (lmms-eval's rules).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Literal

from PIL import Image

Flavour = Literal["llava", "lmms"]
FLAVOURS = ("llava", "lmms")


class RecordError(ValueError):
    """A malformed record in a benchmark or corpus file. The message names the file, the row and the field."""

    def __init__(self, file: str | Path, row: int | str, field: str, problem: str):
        self.file, self.row, self.field, self.problem = str(file), row, field, problem
        super().__init__(f"{file}: row {row}: field {field!r}: {problem}")


@dataclasses.dataclass
class BenchmarkItem:
    """One question of a benchmark, independent of the backbone.

    Attributes:
        qid: unique id within the benchmark split, as a string.
        prompt: the text the model is asked (LLaVA-1.5's prompt: question + the benchmark's answer-format suffix,
            with options/hints/OCR tokens where the benchmark has them). The backbone adapter adds the image and
            the chat template around it.
        answer: the gold answer in the benchmark's own form (a string, a list of 10 VQA answers, a letter, ...).
        image_path: the image file, or None when the image is embedded (``image_bytes``).
        image_bytes: encoded image bytes (e.g. MMBench's base64 TSV column), or None.
        meta: benchmark-specific fields the scorer needs (category, split, subtask, choices, circular index...).
    """

    qid: str
    prompt: str
    answer: Any
    image_path: Path | None = None
    image_bytes: bytes | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def load_image(self) -> Image.Image:
        """The item's image as RGB."""
        if self.image_bytes is not None:
            return Image.open(io.BytesIO(self.image_bytes)).convert("RGB")
        if self.image_path is None:
            raise ValueError(f"item {self.qid} has no image")
        with Image.open(self.image_path) as im:
            return im.convert("RGB")


def check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
