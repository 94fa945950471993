"""GQA-style spatial relations, asked as choose questions: "Is the red star to the left or to the right of the
blue circle?" -> "left". Both shapes are named uniquely, and the relation is asked only when their visible
boxes are apart on that axis (so "left" holds for every pixel of both)."""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.prompts import short_answer
from stepprune.data.synthvqa.questions.base import Question, SceneView, choose, shuffled

FAMILY = "relation"
SUBFAMILIES = ("horizontal", "vertical")

_FORMS = {
    "horizontal": ("Is the {a} to the left or to the right of the {b}?",
                   "Is the {a} to the right or to the left of the {b}?"),
    "vertical": ("Is the {a} above or below the {b}?", "Is the {a} below or above the {b}?"),
}


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """One relation question, or [] if no uniquely named pair is clearly apart."""
    objs = shuffled(rng, view.objects)
    for axis in shuffled(rng, SUBFAMILIES):
        for a in objs:
            for b in objs:
                if a.id == b.id:
                    continue
                rel = view.horizontal(a, b) if axis == "horizontal" else view.vertical(a, b)
                if rel is None:
                    continue
                ref_a, ref_b = view.pick_ref(rng, a), view.pick_ref(rng, b)
                if ref_a is None or ref_b is None:
                    continue
                text = choose(rng, _FORMS[axis]).format(a=ref_a, b=ref_b)
                if text in asked:
                    continue
                where = {"left": "to the left of", "right": "to the right of"}.get(rel, rel)
                program = [
                    {"operation": "select", "argument": ref_b, "dependencies": []},
                    {"operation": "select", "argument": ref_a, "dependencies": []},
                    {"operation": f"choose {'rel' if axis == 'horizontal' else 'vposition'}",
                     "argument": "left|right" if axis == "horizontal" else "above|below",
                     "dependencies": [0, 1]},
                ]
                return [Question(FAMILY, axis, text, short_answer(text), rel, [a.id, b.id],
                                 view.evidence([a.id, b.id]),
                                 extra={"full_answer": f"The {ref_a} is {where} the {ref_b}.",
                                        "program": program})]
    return []
