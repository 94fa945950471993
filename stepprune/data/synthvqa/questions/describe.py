"""The long-answer task, "Describe the image in detail.", with a deterministic templated reference:

    The image shows 3 objects and 1 word on a plain background. In the top left there is a large red star.
    On the right there are a small blue circle and a medium green square. The word "lamp" is written in
    black at the bottom.

Shapes are grouped by the 3x3 region of their visible centroid, regions in reading order, shapes within a
region left to right. The reference is for decode-time pruning experiments; its score is the share of
reference mentions ("large red star", '"lamp"') found in the prediction (see
:mod:`stepprune.benchmarks.synthvqa`).
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.prompts import DESCRIBE
from stepprune.data.synthvqa.questions.base import Question, SceneView
from stepprune.data.synthvqa.vocab import article, region_phrase

FAMILY = "describe"
SUBFAMILIES = ("detail",)
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "center", "right")
_BACKGROUND = {"plain": "plain", "gradient": "gradient", "noise": "speckled"}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def mentions(view: SceneView) -> list[str]:
    """What the reference mentions: one "size color shape" per shape and one quoted word per text."""
    return [f"{o.size} {o.color} {o.shape}" for o in view.objects] + [f'"{t.word}"' for t in view.texts]


def reference(view: SceneView) -> str:
    """The templated description (module docstring)."""
    head = f"The image shows {_count(len(view.objects), 'object')}"
    if view.texts:
        head += f" and {_count(len(view.texts), 'word')}"
    parts = [head + f" on a {_BACKGROUND[view.scene.background.kind]} background."]
    by_region: dict[tuple[str, str], list] = {}
    for o in sorted(view.objects, key=lambda o: o.centroid[0]):
        by_region.setdefault(view.region(o), []).append(o)
    for row in _ROWS:
        for col in _COLS:
            objs = by_region.get((row, col))
            if not objs:
                continue
            names = [f"{article(o.size)} {o.size} {o.color} {o.shape}" for o in objs]
            verb = "is" if len(names) == 1 else "are"
            where = region_phrase(row, col)
            parts.append(f"{where[0].upper()}{where[1:]} there {verb} {_listing(names)}.")
    for t in sorted(view.texts, key=lambda t: (t.centroid[1], t.centroid[0])):
        parts.append(f'The word "{t.word}" is written in {t.color} {region_phrase(*view.region(t))}.')
    return " ".join(parts)


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """The description request with its reference (at most once per image)."""
    if DESCRIBE in asked:
        return []
    refs = [o.id for o in view.objects] + [t.id for t in view.texts]
    return [Question(FAMILY, "detail", DESCRIBE, DESCRIBE, reference(view), refs, view.evidence(refs),
                     extra={"mentions": mentions(view)})]
