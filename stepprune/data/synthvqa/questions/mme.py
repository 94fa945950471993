"""MME-style paired yes/no questions: for one image, one question whose answer is "yes" and one whose answer
is "no", in one of MME's perception subtasks (the subfamily is MME's folder name):

* ``existence``: a present vs an adversarially chosen absent category;
* ``count``: the true count of a category (1..6, drawn uniformly among the available counts) vs a wrong one
  (uniform over the other values 1..6);
* ``position``: the true vs the false side of a clearly separated pair;
* ``color``: the true vs a wrong color of a uniquely named shape (another color in the image if possible);
* ``OCR``: the word a colored word really reads vs another word (another word in the image if possible).

The yes question comes first, as in MME's files. Answers are stored lowercase; the MME export writes Yes/No.
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.prompts import short_answer
from stepprune.data.synthvqa.questions import existence
from stepprune.data.synthvqa.questions.base import Question, SceneView, choose, shuffled
from stepprune.data.synthvqa.vocab import COLOR_NAMES, NUMBER_WORDS, SHAPE_PLURALS, WORDS

FAMILY = "mme"
SUBFAMILIES = ("existence", "count", "position", "color", "OCR")
MAX_COUNT = 6


def _pair(view: SceneView, subfamily: str, yes: str, no: str, yes_refs: list[int], no_refs: list[int],
          asked: set[str]) -> list[Question]:
    if yes in asked or no in asked or yes == no:
        return []
    return [Question(FAMILY, subfamily, yes, short_answer(yes), "yes", yes_refs, view.evidence(yes_refs)),
            Question(FAMILY, subfamily, no, short_answer(no), "no", no_refs, view.evidence(no_refs))]


def _existence(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    pair = existence.pick_pair(view, rng, "adversarial")
    if pair is None:
        return []
    pos, neg = pair
    return _pair(view, "existence", existence.question_text(pos, "this image"),
                 existence.question_text(neg, "this image"),
                 [o.id for o in view.matching(color=pos[0], shape=pos[1])],
                 [o.id for o in view.near_misses(color=neg[0], shape=neg[1])], asked)


def _count_text(n: int, query: dict[str, str]) -> str:
    noun_one = " ".join([query.get("color", ""), query["shape"]]).strip()
    if n == 1:
        return f"Is there exactly one {noun_one} in this image?"
    noun = " ".join([query.get("color", ""), SHAPE_PLURALS[query["shape"]]]).strip()
    return f"Are there exactly {NUMBER_WORDS[n]} {noun} in this image?"


def _count(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    # Draw the true count uniformly among those available, and the wrong count uniformly among the other
    # values: then "exactly one" is not mostly a yes question (most categories occur once).
    queries = {(("shape", o.shape),) for o in view.objects} | {(("color", o.color), ("shape", o.shape))
                                                              for o in view.objects}
    by_count: dict[int, list[dict[str, str]]] = {}
    for q in sorted(queries):
        n = len(view.matching(**dict(q)))
        if n <= MAX_COUNT:
            by_count.setdefault(n, []).append(dict(q))
    for n in shuffled(rng, sorted(by_count)):
        for query in shuffled(rng, by_count[n]):
            wrong = choose(rng, [m for m in range(1, MAX_COUNT + 1) if m != n])
            refs = [o.id for o in view.matching(**query)]
            out = _pair(view, "count", _count_text(n, query), _count_text(wrong, query), refs, refs, asked)
            if out:
                return out
    return []


def _position(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    objs = shuffled(rng, view.objects)
    for a in objs:
        for b in objs:
            if a.id == b.id:
                continue
            h, v = view.horizontal(a, b), view.vertical(a, b)
            if not (h or v):
                continue
            ref_a, ref_b = view.pick_ref(rng, a), view.pick_ref(rng, b)
            if ref_a is None or ref_b is None:
                continue
            if h and (not v or rng.random() < 0.5):
                other = "right" if h == "left" else "left"
                yes = f"Is the {ref_a} on the {h} side of the {ref_b}?"
                no = f"Is the {ref_a} on the {other} side of the {ref_b}?"
            else:
                other = "below" if v == "above" else "above"
                yes, no = f"Is the {ref_a} {v} the {ref_b}?", f"Is the {ref_a} {other} the {ref_b}?"
            out = _pair(view, "position", yes, no, [a.id, b.id], [a.id, b.id], asked)
            if out:
                return out
    return []


def _color(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    for obj in shuffled(rng, view.objects):
        ref = view.pick_ref(rng, obj, exclude=("color",))
        if ref is None:
            continue
        in_image = [o.color for o in view.objects if o.color != obj.color]
        wrong = choose(rng, sorted(set(in_image))) if in_image else choose(
            rng, [c for c in COLOR_NAMES if c != obj.color])
        out = _pair(view, "color", f"Is the {ref} {obj.color}?", f"Is the {ref} {wrong}?", [obj.id], [obj.id],
                    asked)
        if out:
            return out
    return []


def _ocr(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    for t in shuffled(rng, view.texts):
        others = [u for u in view.texts if u.id != t.id]
        if others:
            decoy = choose(rng, others)
            wrong, no_refs = decoy.word, [t.id, decoy.id]
        else:
            wrong, no_refs = choose(rng, [w for w in WORDS if w != t.word]), [t.id]
        out = _pair(view, "OCR", f'Does the {t.color} word read "{t.word}"?',
                    f'Does the {t.color} word read "{wrong}"?', [t.id], no_refs, asked)
        if out:
            return out
    return []


_MAKERS = {"existence": _existence, "count": _count, "position": _position, "color": _color, "OCR": _ocr}


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """One yes/no pair in a random subtask that this image supports, or []."""
    for subfamily in shuffled(rng, SUBFAMILIES):
        out = _MAKERS[subfamily](view, rng, asked)
        if out:
            return out
    return []
