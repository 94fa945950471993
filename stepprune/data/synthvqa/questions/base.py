"""What every question family builds on: the :class:`Question` record and :class:`SceneView`, a scene with its
visible geometry plus the helpers that keep questions unambiguous (unique referring expressions, clear spatial
relations, near-miss confounders).

Evidence of a question = the union of the evidence patches of the elements that answer it (its *referents*).
When the answer is an absence ("no", a count of 0), the referents are the near-miss *confounders*: the shapes
that share the color or the shape of the absent category (what a model must look at to rule it out); with no
confounder the evidence is empty.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from stepprune.data.synthvqa.patches import ElementGeometry
from stepprune.data.synthvqa.scene import Scene
from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPES, region_of

ATTRIBUTES = ("size", "color", "shape")
# Every non-empty attribute subset, shortest first, in ATTRIBUTES order.
_COMBOS: tuple[tuple[str, ...], ...] = tuple(
    c for r in range(1, len(ATTRIBUTES) + 1) for c in itertools.combinations(ATTRIBUTES, r))

# Two elements stand in a left/right (above/below) relation only when their visible boxes are at least this
# far apart on that axis: the relation then holds for every pixel, not just on average.
RELATION_GAP = 2


@dataclasses.dataclass
class Question:
    """One question about one image.

    Attributes:
        family: question family (``existence``, ``attribute``, ... see
        :mod:`stepprune.data.synthvqa.questions`).
        subfamily: finer kind within the family (POPE split, MME subtask, MMBench category, ...).
        question: the bare question text (no answer-format suffix, options or OCR tokens).
        prompt: LLaVA-1.5's prompt string for it, as its mirrored benchmark's loader builds it.
        answer: the gold answer, lowercase except option letters ("yes", "red", "3", "B", a description).
        referents: ids of the elements that answer it (confounders for absences).
        evidence: patch indices (row * 24 + col) holding the referents' visible pixels, ascending.
        choices: option texts in letter order (multiple choice only).
        hint: the ScienceQA-style context (``mc_science`` only).
        ocr_tokens: OCR tokens shown in the prompt (``text`` only).
        pair_id: shared by the two questions of a yes/no pair (``existence``, ``mme``).
        extra: family-specific extras used by the exporters (GQA full answer and program, counts, ...).
    """

    family: str
    subfamily: str
    question: str
    prompt: str
    answer: str
    referents: list[int]
    evidence: list[int]
    choices: list[str] | None = None
    hint: str | None = None
    ocr_tokens: list[str] | None = None
    pair_id: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ObjectView:
    """A shape with its visible geometry."""

    id: int
    shape: str
    color: str
    size: str
    geom: ElementGeometry

    def attr(self, name: str) -> str:
        return getattr(self, name)

    @property
    def centroid(self) -> tuple[float, float]:
        return self.geom.centroid

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.geom.bbox


@dataclasses.dataclass(frozen=True)
class TextView:
    """A rendered word with its visible geometry."""

    id: int
    word: str
    color: str
    geom: ElementGeometry

    @property
    def centroid(self) -> tuple[float, float]:
        return self.geom.centroid

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.geom.bbox


class SceneView:
    """A scene plus the visible geometry of its elements, with the lookups question families need."""

    def __init__(self, scene: Scene, geometry: Sequence[ElementGeometry]):
        self.scene = scene
        self.objects = [ObjectView(o.id, o.shape, o.color, o.size, geometry[o.id]) for o in scene.objects]
        self.texts = [TextView(t.id, t.word, t.color, geometry[t.id]) for t in scene.texts]
        self._patches = {eid: g.patches for eid, g in enumerate(geometry)}
        # How many shapes share each attribute combination: makes uniqueness checks O(1).
        self._combo_counts: Counter[tuple] = Counter(
            (combo, tuple(o.attr(a) for a in combo)) for o in self.objects for combo in _COMBOS)

    # ---- lookups -------------------------------------------------------------------------------------------
    def matching(self, **attrs: str) -> list[ObjectView]:
        """Shapes whose attributes equal all of ``attrs`` (e.g. ``color="red", shape="star"``)."""
        return [o for o in self.objects if all(o.attr(k) == v for k, v in attrs.items())]

    def categories(self) -> set[tuple[str, str]]:
        """(color, shape) pairs present."""
        return {(o.color, o.shape) for o in self.objects}

    def near_misses(self, **attrs: str) -> list[ObjectView]:
        """Confounders of a query with two or more attributes: shapes matching all of them but one.

        For an absent ``red star`` these are the red non-stars and the non-red stars. A one-attribute query
        has no near misses (nothing is "almost red").
        """
        if len(attrs) < 2:
            return []
        return [o for o in self.objects if sum(o.attr(k) == v for k, v in attrs.items()) == len(attrs) - 1]

    def evidence(self, ids: Iterable[int]) -> list[int]:
        """Union of the evidence patches of elements ``ids``, ascending."""
        return sorted({p for i in ids for p in self._patches[i]})

    # ---- referring expressions -----------------------------------------------------------------------------
    def unique_refs(self, obj: ObjectView, exclude: Iterable[str] = ()) -> list[tuple[str, ...]]:
        """Attribute subsets (in ``size, color, shape`` order) that pick out ``obj`` and no other shape."""
        excluded = set(exclude)
        return [combo for combo in _COMBOS if not excluded & set(combo)
                and self._combo_counts[(combo, tuple(obj.attr(a) for a in combo))] == 1]

    def pick_ref(self, rng: np.random.Generator, obj: ObjectView, exclude: Iterable[str] = ()) -> str | None:
        """A random unique referring phrase for ``obj`` ("large red star", "small object"), or None."""
        refs = self.unique_refs(obj, exclude)
        if not refs:
            return None
        return phrase(obj, refs[int(rng.integers(len(refs)))])

    # ---- spatial relations ---------------------------------------------------------------------------------
    @staticmethod
    def horizontal(a: ObjectView | TextView, b: ObjectView | TextView) -> str | None:
        """``"left"`` / ``"right"`` if ``a``'s visible box is entirely left / right of ``b``'s, else None."""
        if a.bbox[2] + RELATION_GAP <= b.bbox[0]:
            return "left"
        if b.bbox[2] + RELATION_GAP <= a.bbox[0]:
            return "right"
        return None

    @staticmethod
    def vertical(a: ObjectView | TextView, b: ObjectView | TextView) -> str | None:
        """``"above"`` / ``"below"`` if ``a``'s visible box is entirely above / below ``b``'s, else None."""
        if a.bbox[3] + RELATION_GAP <= b.bbox[1]:
            return "above"
        if b.bbox[3] + RELATION_GAP <= a.bbox[1]:
            return "below"
        return None

    def region(self, el: ObjectView | TextView) -> tuple[str, str]:
        """3x3 region (row, column) of the element's visible centroid."""
        return region_of(*el.centroid)


def phrase(obj: ObjectView, attrs: Sequence[str]) -> str:
    """Noun phrase from attributes, in English order: ``("size", "color")`` -> ``"large red object"``."""
    words = [obj.attr(a) for a in ATTRIBUTES if a in attrs and a != "shape"]
    words.append(obj.shape if "shape" in attrs else "object")
    return " ".join(words)


def category(color: str, shape: str) -> str:
    """A POPE-style category name: ``"red star"``."""
    return f"{color} {shape}"


ALL_CATEGORIES: tuple[tuple[str, str], ...] = tuple(itertools.product(COLOR_NAMES, SHAPES))


def choose(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """One element of a non-empty sequence, drawn uniformly (numpy's choice mangles tuples)."""
    return items[int(rng.integers(len(items)))]


def shuffled(rng: np.random.Generator, items: Sequence[Any]) -> list[Any]:
    """A shuffled copy."""
    return [items[i] for i in rng.permutation(len(items))]
