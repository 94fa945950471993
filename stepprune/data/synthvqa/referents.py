"""How a one-referent question names its object, and which other objects share those attributes.

An attribute question names its shape by a unique referring phrase ("the large star", "the red object"). A model
that cannot match the whole phrase looks at objects that share *part* of it: the patches of the image split into
the referent's evidence, the other objects that share every named attribute (none, since the phrase is unique,
unless occlusion hides the difference), some of them, or none, and background.
``jobs/bench_backbone_grounding.py`` measures where the answer slot's attention goes over these groups.
"""

from __future__ import annotations

from typing import Any

from stepprune.data.synthvqa.vocab import COLOR_NAMES, N_PATCHES, SHAPES, SIZE_NAMES

_ATTRIBUTE_OF = {**{c: "color" for c in COLOR_NAMES}, **{s: "shape" for s in SHAPES},
                 **{s: "size" for s in SIZE_NAMES}}
GROUPS = ("evidence", "all", "some", "none", "background")


def named_attributes(phrase: str) -> dict[str, str]:
    """{attribute: value} of the colour, shape and size words in a referring phrase ("large red star" ->
    {"size": "large", "color": "red", "shape": "star"}; "object" names nothing)."""
    return {_ATTRIBUTE_OF[w]: w for w in phrase.lower().split() if w in _ATTRIBUTE_OF}


def attribute_match_groups(scene: dict[str, Any], question: dict[str, Any]) -> dict[str, list[int]] | None:
    """The image's patches grouped by how they relate to the question's one referent.

    Args:
        scene: the image's ``scenes.jsonl`` record (``objects`` with ``id``, ``color``, ``shape``, ``size``,
            ``patches``).
        question: its ``questions.jsonl`` record.

    Returns:
        {group: sorted patch indices} for :data:`GROUPS` (the groups are disjoint; a patch of two other objects
        goes to the closer match), or None when the question has not exactly one referent named by a ``select``
        step (only attribute questions have).
    """
    program = (question.get("extra") or {}).get("program") or []
    selects = [p for p in program if p.get("operation") == "select"]
    if len(question.get("referents") or []) != 1 or len(selects) != 1:
        return None
    named = named_attributes(selects[0]["argument"])
    ref = question["referents"][0]
    evidence = set(question["evidence"])
    groups: dict[str, set[int]] = {g: set() for g in GROUPS}
    groups["evidence"] = evidence
    rank = {"all": 0, "some": 1, "none": 2}
    best: dict[int, str] = {}
    for obj in scene["objects"]:
        if obj["id"] == ref:
            continue
        shared = sum(obj[k] == v for k, v in named.items())
        group = "all" if shared == len(named) else "some" if shared else "none"
        for p in obj["patches"]:
            if p not in evidence and (p not in best or rank[group] < rank[best[p]]):
                best[p] = group
    for p, group in best.items():
        groups[group].add(p)
    groups["background"] = set(range(N_PATCHES)) - evidence - set(best)
    return {g: sorted(ps) for g, ps in groups.items()}
