"""GQA-style attribute queries: the color, shape or size of a uniquely identified shape.

The object is named by attributes other than the one asked ("What color is the large star?"), using only
attribute combinations that match exactly one shape in the image. Answers are single lowercase words.
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.prompts import short_answer
from stepprune.data.synthvqa.questions.base import Question, SceneView, shuffled
from stepprune.data.synthvqa.vocab import article

FAMILY = "attribute"
SUBFAMILIES = ("color", "shape", "size")


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """One attribute question, or [] if no shape can be referred to uniquely."""
    for attr in shuffled(rng, SUBFAMILIES):
        for obj in shuffled(rng, view.objects):
            ref = view.pick_ref(rng, obj, exclude=(attr,))
            if ref is None:
                continue
            text = f"What {attr} is the {ref}?"
            if text in asked:
                continue
            value = obj.attr(attr)
            full = f"The {ref} is {article(value)} {value}." if attr == "shape" else f"The {ref} is {value}."
            program = [
                {"operation": "select", "argument": ref, "dependencies": []},
                {"operation": f"query {attr}", "argument": attr, "dependencies": [0]},
            ]
            return [Question(FAMILY, attr, text, short_answer(text), value, [obj.id], view.evidence([obj.id]),
                             extra={"full_answer": full, "program": program})]
    return []
