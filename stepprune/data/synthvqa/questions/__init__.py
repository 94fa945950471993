"""Question families, each mirroring one real benchmark, and the per-image question sampler.

| family | mirrors | subfamilies | answer |
|---|---|---|---|
| ``existence`` | POPE | random / popular / adversarial | yes / no, as a balanced pair |
| ``attribute`` | GQA | color / shape / size | one word |
| ``relation`` | GQA | horizontal / vertical | left / right / above / below |
| ``counting`` | VQAv2 | color / shape / color_shape / size_shape / all | digits |
| ``mc_mmbench`` | MMBench | attribute_recognition / object_localization / spatial_relationship / ocr | A-D |
| ``mc_science`` | ScienceQA | temperature / extreme / majority | A-D (2-4 options) |
| ``text`` | TextVQA | word_by_color / word_by_position / color_of_word | one word |
| ``mme`` | MME | existence / count / position / color / OCR | yes / no, as a pair |
| ``describe`` | (LLaVA-Bench style) | detail | templated description |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from stepprune.data.synthvqa.questions import (
    attribute,
    counting,
    describe,
    existence,
    mc_mmbench,
    mc_science,
    mme,
    relation,
    text,
)
from stepprune.data.synthvqa.questions.base import Question, SceneView

Maker = Callable[[SceneView, np.random.Generator, set[str]], list[Question]]

FAMILIES: dict[str, Maker] = {
    "existence": existence.make,
    "attribute": attribute.make,
    "relation": relation.make,
    "counting": counting.make,
    "mc_mmbench": mc_mmbench.make,
    "mc_science": mc_science.make,
    "text": text.make,
    "mme": mme.make,
    "describe": describe.make,
}

SUBFAMILIES: dict[str, tuple[str, ...]] = {
    "existence": existence.SUBFAMILIES,
    "attribute": attribute.SUBFAMILIES,
    "relation": relation.SUBFAMILIES,
    "counting": counting.SUBFAMILIES,
    "mc_mmbench": mc_mmbench.SUBFAMILIES,
    "mc_science": mc_science.SUBFAMILIES,
    "text": text.SUBFAMILIES,
    "mme": mme.SUBFAMILIES,
    "describe": describe.SUBFAMILIES,
}

# The benchmark whose format, prompt and scoring rule each family follows (None: no official benchmark).
FAMILY_BENCHMARK: dict[str, str | None] = {
    "existence": "pope",
    "attribute": "gqa",
    "relation": "gqa",
    "counting": "vqav2",
    "mc_mmbench": "mmbench",
    "mc_science": "scienceqa",
    "text": "textvqa",
    "mme": "mme",
    "describe": None,
}

# Families asked at most once per image (MME has one pair per image; one description is enough).
ONCE_PER_IMAGE = frozenset({"mme", "describe"})


def make_questions(view: SceneView, rng: np.random.Generator, n: int,
                   weights: Mapping[str, float]) -> list[Question]:
    """Up to ``n`` distinct questions about one image.

    Families are drawn by ``weights``; a family that cannot ask anything new about this image (no words to
    read, no uniquely named pair, ...) is redrawn, up to ``4 n`` draws. A pair is only taken if both fit, so
    the result never splits a pair. Pairs get a ``pair_id`` of ``"<image_id>_p<k>"``.
    """
    names = [f for f, w in weights.items() if w > 0]
    p = np.asarray([weights[f] for f in names], float)
    p /= p.sum()
    out: list[Question] = []
    asked: set[str] = set()
    used: set[str] = set()
    for _ in range(4 * n):
        if len(out) >= n:
            break
        family = names[int(rng.choice(len(names), p=p))]
        if family in ONCE_PER_IMAGE and family in used:
            continue
        new = FAMILIES[family](view, rng, asked)
        if not new or len(out) + len(new) > n:
            continue
        if len(new) > 1:
            for q in new:
                q.pair_id = f"{view.scene.image_id}_p{len(out)}"
        out.extend(new)
        asked.update(q.question for q in new)
        used.add(family)
    return out


__all__ = ["FAMILIES", "FAMILY_BENCHMARK", "ONCE_PER_IMAGE", "Question", "SceneView", "SUBFAMILIES",
           "make_questions"]
