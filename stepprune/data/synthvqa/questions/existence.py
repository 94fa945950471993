"""POPE-style existence: "Is there a <color> <shape> in the image?", asked as a balanced yes/no pair.

The "yes" question names a category present in the image, the "no" question an absent one; the subfamily says
how the absent one is chosen, as POPE does:

* ``random``: any absent category;
* ``popular``: favouring frequent categories, weighted by their squared prior frequency (POPE: the most
  frequent objects of the dataset);
* ``adversarial``: the absent categories that share the most with what is present, i.e. their color is on one
  shape and their shape on another (POPE: the objects that co-occur most with those in the image).

Unlike POPE, the yes question of a pair is drawn the same way (frequent present categories for ``popular``,
present categories that have such near misses for ``adversarial``), and both draws are weighted by the inverse
probability that the category is present (resp. absent) in an image with this many shapes. Together this makes
every category about as likely to be asked with answer "yes" as with "no", so the question text alone does not
predict the answer. (With POPE's rule, top-k popular negatives and random positives, a blind model that
answers by category alone scored 73 % on this generator's existence questions; with this one, about 50 %.)
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from stepprune.data.synthvqa.prompts import short_answer
from stepprune.data.synthvqa.questions.base import ALL_CATEGORIES, Question, SceneView, category, choose
from stepprune.data.synthvqa.vocab import COLOR_NAMES, COLOR_PRIOR, SHAPE_PRIOR, SHAPES, article

FAMILY = "existence"
SUBFAMILIES = ("random", "popular", "adversarial")

Category = tuple[str, str]


def prior(cat: Category) -> float:
    """Prior probability that one shape drawn by the generator has this (color, shape)."""
    return COLOR_PRIOR[COLOR_NAMES.index(cat[0])] * SHAPE_PRIOR[SHAPES.index(cat[1])]


def presence(cat: Category, n_objects: int) -> float:
    """Probability that an image with ``n_objects`` shapes contains the category (independent draws)."""
    return 1.0 - (1.0 - prior(cat)) ** n_objects


def question_text(cat: Category, where: str = "the image") -> str:
    name = category(*cat)
    return f"Is there {article(name)} {name} in {where}?"


def _near_miss_score(view: SceneView, cat: Category) -> int:
    # 2 when the category's color is on another shape and its shape has another color, as in "red star" among
    # a red circle and a blue star; only shapes of *other* categories count, so present and absent compare
    # alike.
    others = [o for o in view.objects if (o.color, o.shape) != cat]
    return int(any(o.color == cat[0] for o in others)) + int(any(o.shape == cat[1] for o in others))


def _weighted(rng: np.random.Generator, cats: list[Category], weights: list[float]) -> Category:
    p = np.asarray(weights, float)
    return cats[int(rng.choice(len(cats), p=p / p.sum()))]


def pick_pair(view: SceneView, rng: np.random.Generator, subfamily: str,
              skip: Collection[Category] = ()) -> tuple[Category, Category] | None:
    """(present category, absent category) for one yes/no pair of ``subfamily``, avoiding ``skip``."""
    present = sorted(view.categories() - set(skip))
    absent = [c for c in ALL_CATEGORIES if c not in view.categories() and c not in skip]
    if not present or not absent:
        return None
    n = len(view.objects)
    if subfamily == "adversarial":
        best = max(_near_miss_score(view, c) for c in absent)
        absent = [c for c in absent if _near_miss_score(view, c) == best]
        top = max(_near_miss_score(view, c) for c in present)
        present = [c for c in present if _near_miss_score(view, c) == top]
    elif subfamily not in ("random", "popular"):
        raise ValueError(f"unknown existence subfamily {subfamily!r}")
    # popular: weight by the squared prior, which concentrates on the most frequent categories (a top category
    # is ~15x as likely as a bottom one) while keeping yes and no draws on the same footing.
    bias = (lambda c: prior(c) ** 2) if subfamily == "popular" else (lambda c: 1.0)
    pos = _weighted(rng, present, [bias(c) / presence(c, n) for c in present])
    neg = _weighted(rng, absent, [bias(c) / (1.0 - presence(c, n)) for c in absent])
    return pos, neg


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """A yes question and a no question of one randomly chosen subfamily, or [] if none is left to ask."""
    subfamily = choose(rng, SUBFAMILIES)
    skip = {c for c in ALL_CATEGORIES if question_text(c) in asked}
    pair = pick_pair(view, rng, subfamily, skip)
    if pair is None:
        return []
    pos, neg = pair
    yes_refs = [o.id for o in view.matching(color=pos[0], shape=pos[1])]
    no_refs = [o.id for o in view.near_misses(color=neg[0], shape=neg[1])]
    return [
        Question(FAMILY, subfamily, question_text(pos), short_answer(question_text(pos)), "yes",
                 yes_refs, view.evidence(yes_refs), extra={"category": category(*pos)}),
        Question(FAMILY, subfamily, question_text(neg), short_answer(question_text(neg)), "no",
                 no_refs, view.evidence(no_refs), extra={"category": category(*neg)}),
    ]
