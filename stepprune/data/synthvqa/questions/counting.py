"""VQAv2-style counting: "How many red stars are there?" -> "2" (digits, as VQA's answer normalisation maps
number words to). Rendered words are not objects: only shapes are counted. About one in seven questions asks
for an absent category (answer "0"), whose evidence is its near misses. Among the queries of the drawn kind,
the count is drawn uniformly first (then a query with that count), which flattens the answer prior."""

from __future__ import annotations

import itertools

import numpy as np

from stepprune.data.synthvqa.prompts import short_answer
from stepprune.data.synthvqa.questions.base import Question, SceneView, choose
from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPE_PLURALS, SHAPES, SIZE_NAMES

FAMILY = "counting"
SUBFAMILIES = ("color", "shape", "color_shape", "size_shape", "all")
_P_ABSENT = 0.15
_ATTRS = {"color": ("color",), "shape": ("shape",), "color_shape": ("color", "shape"),
          "size_shape": ("size", "shape"), "all": ()}
_VALUES = {"color": COLOR_NAMES, "shape": SHAPES, "size": SIZE_NAMES}


def question_text(query: dict[str, str]) -> str:
    """English question for an attribute query (an empty query counts every shape)."""
    noun = SHAPE_PLURALS[query["shape"]] if "shape" in query else "objects"
    mods = [query[a] for a in ("size", "color") if a in query]
    return f"How many {' '.join(mods + [noun])} are there?"


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """One counting question, or [] if the drawn kind has nothing left to ask."""
    subfamily = choose(rng, SUBFAMILIES)
    attrs = _ATTRS[subfamily]
    if not attrs:
        queries = [{}]
    elif rng.random() < _P_ABSENT:
        present = {tuple(o.attr(a) for a in attrs) for o in view.objects}
        combos = itertools.product(*[_VALUES[a] for a in attrs])
        queries = [dict(zip(attrs, c)) for c in combos if c not in present]
    else:
        values = sorted({tuple(o.attr(a) for a in attrs) for o in view.objects})
        queries = [dict(zip(attrs, v)) for v in values]
    by_count: dict[int, list[dict[str, str]]] = {}
    for q in queries:
        if question_text(q) not in asked:
            by_count.setdefault(len(view.matching(**q)), []).append(q)
    if not by_count:
        return []
    # The count first, uniformly among those on offer, then a query with that count: most categories occur
    # once, and drawing queries directly would make "1" the answer to nearly half the questions.
    query = choose(rng, by_count[choose(rng, sorted(by_count))])
    counted = view.matching(**query)
    refs = [o.id for o in counted] if counted else [o.id for o in view.near_misses(**query)]
    text = question_text(query)
    return [Question(FAMILY, subfamily, text, short_answer(text), str(len(counted)), refs,
                     view.evidence(refs), extra={"count": len(counted), "query": query})]
