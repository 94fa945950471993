"""ScienceQA-style multiple choice: a "Context:" hint states a rule, the image supplies the facts, and the
answer needs both. Two to four options, lettered A-D:

* ``temperature``: the hint says which colors are warm or cool; "Is the large star warm, cool, or neither?"
  (the answer class is drawn uniformly among those in the image);
* ``extreme``: the hint makes the shapes planets with the sun beyond one edge; "Which of these planets is
  closest to the sun?" (the winner's visible box is at least 6 px nearer that edge than every other option's);
* ``majority``: the hint makes each shape a vote for the team of its color; "Which of these teams got the most
  votes?" (the winner leads every other option by at least one vote).
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.prompts import LETTERS, scienceqa
from stepprune.data.synthvqa.questions.base import Question, SceneView, choose, shuffled
from stepprune.data.synthvqa.vocab import IMAGE_SIZE

FAMILY = "mc_science"
SUBFAMILIES = ("temperature", "extreme", "majority")
WARM = ("red", "orange", "yellow", "pink")
COOL = ("green", "blue", "purple")
TEMPERATURE_HINT = ("Red, orange, yellow and pink are warm colors. Green, blue and purple are cool colors. "
                    "Black is neither warm nor cool.")
EXTREME_MARGIN = 6
_EDGES = ("left", "right", "top", "bottom")


def temperature_of(color: str) -> str:
    """'warm', 'cool' or 'neither', by :data:`TEMPERATURE_HINT`."""
    return "warm" if color in WARM else "cool" if color in COOL else "neither"


def edge_distance(bbox: tuple[int, int, int, int], edge: str) -> int:
    """Pixels between a visible box and one image edge."""
    x0, y0, x1, y1 = bbox
    return {"left": x0, "top": y0, "right": IMAGE_SIZE - 1 - x1, "bottom": IMAGE_SIZE - 1 - y1}[edge]


def _question(rng: np.random.Generator, subfamily: str, hint: str, text: str, answer: str, options: list[str],
              refs: list[int], view: SceneView, solution: str) -> Question:
    choices = shuffled(rng, options)
    letter = LETTERS[choices.index(answer)]
    return Question(FAMILY, subfamily, text, scienceqa(text, choices, hint), letter, refs,
                    view.evidence(refs), choices=choices, hint=hint,
                    extra={"answer_text": answer, "solution": solution})


def _temperature(view: SceneView, rng: np.random.Generator, asked: set[str]) -> Question | None:
    # The answer class first, uniformly among those present: half the palette is warm, and drawing the shape
    # directly would make "warm" the answer a blind model picks.
    classes = sorted({temperature_of(o.color) for o in view.objects})
    target = choose(rng, classes)
    for obj in shuffled(rng, [o for o in view.objects if temperature_of(o.color) == target]) + shuffled(
            rng, [o for o in view.objects if temperature_of(o.color) != target]):
        ref = view.pick_ref(rng, obj, exclude=("color",))
        text = f"Is the {ref} warm, cool, or neither?"
        if ref is None or text in asked:
            continue
        answer = temperature_of(obj.color)
        solution = f"The {ref} is {obj.color}. {obj.color.capitalize()} is " + (
            "neither warm nor cool." if answer == "neither" else f"a {answer} color.")
        return _question(rng, "temperature", TEMPERATURE_HINT, text, answer, ["warm", "cool", "neither"],
                         [obj.id], view, solution)
    return None


def _extreme(view: SceneView, rng: np.random.Generator, asked: set[str]) -> Question | None:
    if len(view.objects) < 2:
        return None
    edge = choose(rng, _EDGES)
    hint = f"Each shape in the picture is a planet. The sun is just beyond the {edge} edge of the picture."
    text = "Which of these planets is closest to the sun?"
    if text in asked:
        return None
    named = [(o, view.pick_ref(rng, o)) for o in shuffled(rng, view.objects)]
    named = [(o, r) for o, r in named if r is not None]
    if len(named) < 2:
        return None
    k = int(rng.integers(2, min(4, len(named)) + 1))
    options = sorted(named[:k], key=lambda pair: edge_distance(pair[0].bbox, edge))
    best, runner_up = options[0][0], options[1][0]
    if edge_distance(runner_up.bbox, edge) - edge_distance(best.bbox, edge) < EXTREME_MARGIN:
        return None
    answer = f"the {options[0][1]}"
    solution = f"The {options[0][1]} is nearest to the {edge} edge, where the sun is."
    return _question(rng, "extreme", hint, text, answer, [f"the {r}" for _, r in options],
                     [o.id for o, _ in options], view, solution)


def _majority(view: SceneView, rng: np.random.Generator, asked: set[str]) -> Question | None:
    hint = "Each shape in the picture is one vote for the team of its color."
    text = "Which of these teams got the most votes?"
    votes: dict[str, int] = {}
    for o in view.objects:
        votes[o.color] = votes.get(o.color, 0) + 1
    if len(votes) < 2 or text in asked:
        return None
    k = int(rng.integers(2, min(4, len(votes)) + 1))
    teams = sorted(shuffled(rng, list(votes))[:k], key=lambda c: -votes[c])
    if votes[teams[0]] - votes[teams[1]] < 1:
        return None
    solution = f"The {teams[0]} team got {votes[teams[0]]} votes, more than any other of these teams."
    refs = [o.id for o in view.objects if o.color in teams]
    return _question(rng, "majority", hint, text, teams[0], list(teams), refs, view, solution)


_MAKERS = {"temperature": _temperature, "extreme": _extreme, "majority": _majority}


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """One ScienceQA-style question of a random kind that this image supports, or []."""
    for subfamily in shuffled(rng, SUBFAMILIES):
        q = _MAKERS[subfamily](view, rng, asked)
        if q is not None:
            return [q]
    return []
