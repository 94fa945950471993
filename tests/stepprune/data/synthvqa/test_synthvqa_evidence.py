"""Evidence patches match the drawn pixels: recomputed here with plain loops over the 24x24 grid, from the
owner map and from the image itself."""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.patches import coverage, evidence_patches
from stepprune.data.synthvqa.vocab import COLORS

THRESHOLD = 0.2 * 64


def _patch(a: np.ndarray, p: int) -> np.ndarray:
    r, c = divmod(p, 24)
    return a[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]


def _element_counts(owner: np.ndarray, eid: int) -> np.ndarray:
    return np.array([(_patch(owner, p) == eid).sum() for p in range(576)])


def test_element_patches_follow_the_rule(samples):
    for s in samples[:25]:
        owner, image = s.rendered.owner, s.rendered.image
        for el in list(s.scene.objects) + list(s.scene.texts):
            counts = _element_counts(owner, el.id)
            patches = set(s.geometry[el.id].patches)
            strong = set(np.flatnonzero(counts >= THRESHOLD).tolist())
            assert patches, f"{s.scene.image_id}: element {el.id} has no evidence"
            if strong:
                assert patches == strong
            else:  # tiny or mostly hidden: its single best patch
                assert patches == {int(counts.argmax())}
            color = np.array(COLORS[el.color], np.uint8)
            for p in patches:
                # the patch really shows the element's color
                assert (_patch(image, p).reshape(-1, 3) == color).all(axis=1).sum() >= counts[p] > 0
            # most of the element's visible pixels lie in its evidence patches
            inside = sum(counts[p] for p in patches)
            assert inside >= 0.5 * counts.sum()


def test_question_evidence_is_the_union_of_its_referents(samples):
    for s in samples:
        for q in s.questions:
            union = sorted({p for r in q.referents for p in s.geometry[r].patches})
            assert q.evidence == union
            assert all(0 <= p < 576 for p in q.evidence)


def test_referents_are_the_elements_named_by_the_answer(samples):
    n_checked = 0
    for s in samples:
        objs = {o.id: o for o in s.scene.objects}
        for q in s.questions:
            if q.family == "counting":
                n = int(q.answer)
                if n:  # the counted shapes
                    assert len(q.referents) == n
                    assert all(all(getattr(objs[r], k) == v for k, v in q.extra["query"].items())
                               for r in q.referents)
                else:  # near misses: all attributes of the query but one
                    for r in q.referents:
                        hits = sum(getattr(objs[r], k) == v for k, v in q.extra["query"].items())
                        assert hits == len(q.extra["query"]) - 1
                n_checked += 1
            if q.family == "text":
                assert len(q.referents) == 1 and q.referents[0] >= len(s.scene.objects)
    assert n_checked > 20


def test_tiny_element_falls_back_to_its_best_patch():
    owner = np.full((192, 192), -1, np.int16)
    owner[0:2, 0:3] = 0        # 6 px in patch 0
    owner[0:3, 8:11] = 0       # 9 px in patch 1: the best one
    owner[100:104, 100:104] = 1
    counts = coverage(owner, 2)
    assert evidence_patches(counts, 0) == [1]
    owner[16:24, 16:24] = 0    # a full patch: now only patches reaching 20 % count
    assert evidence_patches(coverage(owner, 2), 0) == [2 * 24 + 2]
