"""The scene description: what is drawn where. A :class:`Scene` is plain data that re-renders to the exact
same pixels (:func:`stepprune.data.synthvqa.render.render_scene`), so ``scenes.jsonl`` is a complete record of
every image and of every per-patch label derived from it.

Element ids share one namespace per scene: objects are ``0 .. n_objects - 1`` in drawing order (later objects
occlude earlier ones), texts follow as ``n_objects .. n_objects + n_texts - 1``. The owner map uses these ids
and ``-1`` for background.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One filled shape.

    Attributes:
        id: element id (also its z-order rank among objects).
        shape: one of :data:`~stepprune.data.synthvqa.vocab.SHAPES`.
        color: one of :data:`~stepprune.data.synthvqa.vocab.COLORS`.
        size: size class, one of :data:`~stepprune.data.synthvqa.vocab.SIZES`.
        extent: bounding-box extent in pixels (the size class's extent plus jitter).
        x: left pixel column of the bounding box.
        y: top pixel row of the bounding box.
    """

    id: int
    shape: str
    color: str
    size: str
    extent: int
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class TextSnippet:
    """One rendered word.

    Attributes:
        id: element id (after all objects).
        word: one of :data:`~stepprune.data.synthvqa.vocab.WORDS`.
        color: its ink color.
        font_size: PIL default-font size.
        x: left pixel column of the ink's bounding box.
        y: top pixel row of the ink's bounding box.
    """

    id: int
    word: str
    color: str
    font_size: int
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Background:
    """The background fill.

    Attributes:
        kind: ``"plain"``, ``"gradient"`` or ``"noise"``.
        color: base RGB color (pale).
        color2: the gradient's end color (``gradient`` only).
        direction: gradient direction, ``"horizontal"``, ``"vertical"`` or ``"diagonal"`` (``gradient`` only).
        noise: half-width of the uniform per-channel noise in intensity levels (``noise`` only).
        noise_seed: seed of that noise (``noise`` only).
    """

    kind: str
    color: tuple[int, int, int]
    color2: tuple[int, int, int] | None = None
    direction: str | None = None
    noise: int = 0
    noise_seed: int = 0


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything needed to draw one image.

    Attributes:
        image_id: unique id across all splits (``"<split>_<index:06d>"``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        index: position within the split.
        background: the background fill.
        objects: shapes in drawing order.
        texts: rendered words (drawn last; they never overlap objects or each other).
        ocr_tokens: the words as an OCR system would list them, in a fixed shuffled order (never reading
        order,
            so that the token list alone does not tell where a word is).
    """

    image_id: str
    split: str
    index: int
    background: Background
    objects: tuple[SceneObject, ...]
    texts: tuple[TextSnippet, ...]
    ocr_tokens: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists). Hand-written: ``dataclasses.asdict`` was a tenth of the
        generation time."""
        bg = dict(vars(self.background))
        bg["color"] = list(bg["color"])
        bg["color2"] = list(bg["color2"]) if bg["color2"] is not None else None
        return {
            "image_id": self.image_id, "split": self.split, "index": self.index, "background": bg,
            "objects": [dict(vars(o)) for o in self.objects], "texts": [dict(vars(t)) for t in self.texts],
            "ocr_tokens": list(self.ocr_tokens),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_dict` (extra keys, such as the stats ``scenes.jsonl`` adds, are ignored)."""
        bg = dict(d["background"])
        bg["color"] = tuple(bg["color"])
        if bg.get("color2") is not None:
            bg["color2"] = tuple(bg["color2"])
        return cls(
            image_id=d["image_id"], split=d["split"], index=int(d["index"]),
            background=Background(**bg),
            objects=tuple(SceneObject(**{f.name: o[f.name] for f in dataclasses.fields(SceneObject)})
                          for o in d["objects"]),
            texts=tuple(TextSnippet(**{f.name: t[f.name] for f in dataclasses.fields(TextSnippet)})
                        for t in d["texts"]),
            ocr_tokens=tuple(d["ocr_tokens"]),
        )
