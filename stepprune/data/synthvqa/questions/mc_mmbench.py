"""MMBench-style multiple choice with four lettered options (A-D), in four of MMBench's categories:

* ``attribute_recognition``: "What is the color of the large star?" (options: colors, or shapes);
* ``object_localization``: "Where is the red star located in the image?" (the four quadrants; asked only when
  the shape's centroid is at least 12 px from both center lines);
* ``spatial_relationship``: "Where is the red star relative to the blue circle?" (left / right / above /
below;
  asked only when the two are apart on one axis and overlap on the other, so exactly one option holds);
* ``ocr``: "Which word is written in red?" (the image's other words and random vocabulary words as
distractors).

Options are shuffled, so every letter is equally likely to be correct. There is no hint.
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.prompts import LETTERS, mmbench
from stepprune.data.synthvqa.questions.base import Question, SceneView, shuffled
from stepprune.data.synthvqa.vocab import COLOR_NAMES, IMAGE_SIZE, SHAPES, WORDS

FAMILY = "mc_mmbench"
SUBFAMILIES = ("attribute_recognition", "object_localization", "spatial_relationship", "ocr")
N_OPTIONS = 4
QUADRANT_MARGIN = 12
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
DIRECTIONS = ("left", "right", "above", "below")


def _distractors(rng: np.random.Generator, answer: str, present: list[str],
                 pool: tuple[str, ...]) -> list[str]:
    # Prefer values that occur in the image (harder than ones that don't), then fill from the whole pool.
    first = [v for v in dict.fromkeys(shuffled(rng, present)) if v != answer]
    rest = [v for v in shuffled(rng, pool) if v != answer and v not in first]
    return (first + rest)[:N_OPTIONS - 1]


def _question(rng: np.random.Generator, subfamily: str, text: str, answer: str, distractors: list[str],
              refs: list[int], view: SceneView) -> Question:
    choices = shuffled(rng, [answer, *distractors])
    letter = LETTERS[choices.index(answer)]
    return Question(FAMILY, subfamily, text, mmbench(text, choices), letter, refs, view.evidence(refs),
                    choices=choices, extra={"answer_text": answer})


def _attribute(view: SceneView, rng: np.random.Generator, asked: set[str]) -> Question | None:
    for attr in shuffled(rng, ("color", "shape")):
        for obj in shuffled(rng, view.objects):
            ref = view.pick_ref(rng, obj, exclude=(attr,))
            text = f"What is the {attr} of the {ref}?"
            if ref is None or text in asked:
                continue
            pool = COLOR_NAMES if attr == "color" else SHAPES
            wrong = _distractors(rng, obj.attr(attr), [o.attr(attr) for o in view.objects], pool)
            return _question(rng, "attribute_recognition", text, obj.attr(attr), wrong, [obj.id], view)
    return None


def _localization(view: SceneView, rng: np.random.Generator, asked: set[str]) -> Question | None:
    mid = IMAGE_SIZE / 2
    for obj in shuffled(rng, view.objects):
        x, y = obj.centroid
        if abs(x - mid) < QUADRANT_MARGIN or abs(y - mid) < QUADRANT_MARGIN:
            continue
        ref = view.pick_ref(rng, obj)
        text = f"Where is the {ref} located in the image?"
        if ref is None or text in asked:
            continue
        answer = f"{'top' if y < mid else 'bottom'} {'left' if x < mid else 'right'}"
        return _question(rng, "object_localization", text, answer, [q for q in QUADRANTS if q != answer],
                         [obj.id], view)
    return None


def _overlap(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def _spatial(view: SceneView, rng: np.random.Generator, asked: set[str]) -> Question | None:
    objs = shuffled(rng, view.objects)
    for a in objs:
        for b in objs:
            if a.id == b.id:
                continue
            h, v = view.horizontal(a, b), view.vertical(a, b)
            if h and _overlap(a.bbox[1], a.bbox[3], b.bbox[1], b.bbox[3]):
                answer = h
            elif v and _overlap(a.bbox[0], a.bbox[2], b.bbox[0], b.bbox[2]):
                answer = v
            else:
                continue
            ref_a, ref_b = view.pick_ref(rng, a), view.pick_ref(rng, b)
            text = f"Where is the {ref_a} relative to the {ref_b}?"
            if ref_a is None or ref_b is None or text in asked:
                continue
            wrong = [d for d in DIRECTIONS if d != answer]
            return _question(rng, "spatial_relationship", text, answer, wrong, [a.id, b.id], view)
    return None


def _ocr(view: SceneView, rng: np.random.Generator, asked: set[str]) -> Question | None:
    for t in shuffled(rng, view.texts):
        text = f"Which word is written in {t.color}?"
        if text in asked:
            continue
        wrong = _distractors(rng, t.word, [u.word for u in view.texts], WORDS)
        return _question(rng, "ocr", text, t.word, wrong, [t.id], view)
    return None


_MAKERS = {"attribute_recognition": _attribute, "object_localization": _localization,
           "spatial_relationship": _spatial, "ocr": _ocr}


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """One multiple-choice question of a random category that this image supports, or []."""
    for subfamily in shuffled(rng, SUBFAMILIES):
        q = _MAKERS[subfamily](view, rng, asked)
        if q is not None:
            return [q]
    return []
