"""Scenes: determinism, re-rendering from the record, the layout rules and the complexity stats."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from stepprune.data.synthvqa import (
    DEFAULT_FAMILY_WEIGHTS,
    FAMILIES,
    Scene,
    SynthVQAConfig,
    analyse,
    make_sample,
    question_records,
    scene_record,
)
from stepprune.data.synthvqa.shapes import shape_mask, text_mask
from stepprune.data.synthvqa.vocab import COLORS, IMAGE_SIZE, SIZES


def _png(sample) -> bytes:
    buf = io.BytesIO()
    sample.rendered.to_pil().save(buf, format="PNG")
    return buf.getvalue()


def test_same_seed_gives_identical_images_and_questions(cfg):
    for i in range(5):
        a, b = make_sample(cfg, "train", i), make_sample(cfg, "train", i)
        assert _png(a) == _png(b)
        assert question_records(a) == question_records(b)
        assert scene_record(a) == scene_record(b)


def test_different_seed_split_or_index_gives_different_images(cfg):
    base = _png(make_sample(cfg, "train", 0))
    assert _png(make_sample(dataclasses.replace(cfg, seed=cfg.seed + 1), "train", 0)) != base
    assert _png(make_sample(cfg, "val", 0)) != base
    assert _png(make_sample(cfg, "train", 1)) != base


def test_question_mix_does_not_change_images(cfg):
    other = dataclasses.replace(cfg, questions_per_image=3, family_weights={"counting": 1.0})
    assert _png(make_sample(other, "test", 4)) == _png(make_sample(cfg, "test", 4))


def test_scene_record_re_renders_to_identical_pixels(samples):
    for s in samples[:10]:
        again, geometry, stats = analyse(Scene.from_dict(scene_record(s)))
        assert np.array_equal(again.image, s.rendered.image)
        assert np.array_equal(again.owner, s.rendered.owner)
        assert stats == s.stats and geometry == s.geometry


def test_every_foreground_pixel_has_its_elements_exact_color(samples):
    for s in samples[:20]:
        elements = list(s.scene.objects) + list(s.scene.texts)
        for el in elements:
            pix = s.rendered.image[s.rendered.owner == el.id]
            assert pix.size and (pix == np.array(COLORS[el.color], np.uint8)).all()


def test_layout_rules_hold(samples, cfg):
    for s in samples:
        owner = s.rendered.owner
        objs, texts = s.scene.objects, s.scene.texts
        assert cfg.min_objects <= len(objs) <= cfg.max_objects and len(texts) <= cfg.max_texts
        for o in objs:
            assert abs(o.extent - SIZES[o.size]) <= 1
            full = int(shape_mask(o.shape, o.extent).sum())
            assert (owner == o.id).sum() >= cfg.min_visible_fraction * full, "shape hidden too much"
            assert 0 <= o.x and o.x + o.extent <= IMAGE_SIZE and 0 <= o.y and o.y + o.extent <= IMAGE_SIZE
        for t in texts:
            # a word is drawn in full: nothing covers any of its pixels
            assert (owner == t.id).sum() == text_mask(t.word, t.font_size).sum()
        assert len({t.word for t in texts}) == len(texts) and len({t.color for t in texts}) == len(texts)
        # same-colored shapes never touch: no pixel of one is 4-adjacent to a pixel of another of that color
        color_of = {o.id: o.color for o in objs}
        a, b = owner[:, :-1], owner[:, 1:]
        c, d = owner[:-1, :], owner[1:, :]
        for p, q in ((a, b), (c, d)):
            touching = (p >= 0) & (q >= 0) & (p != q) & (p < len(objs)) & (q < len(objs))
            for i, j in zip(p[touching], q[touching]):
                assert color_of[int(i)] != color_of[int(j)], f"{s.scene.image_id}: same-colored shapes touch"


def test_some_shapes_overlap_and_complexity_varies_widely(samples):
    n_objects = [s.stats["n_objects"] for s in samples]
    fg = [s.stats["fg_patch_fraction"] for s in samples]
    assert min(n_objects) <= 3 and max(n_objects) >= 16
    assert max(fg) > 3 * min(fg)
    assert {s.stats["n_texts"] for s in samples} == {0, 1, 2, 3}
    assert {s.scene.background.kind for s in samples} == {"plain", "gradient", "noise"}
    occluded = sum((s.rendered.owner == o.id).sum() < shape_mask(o.shape, o.extent).sum()
                   for s in samples for o in s.scene.objects)
    assert occluded > 0


def test_complexity_stats_match_the_owner_map(samples):
    for s in samples[:20]:
        fg = s.rendered.owner >= 0
        per_patch = fg.reshape(24, 8, 24, 8).sum(axis=(1, 3)).ravel()
        assert s.stats["n_objects"] == len(s.scene.objects) and s.stats["n_texts"] == len(s.scene.texts)
        assert s.stats["fg_patch_fraction"] == pytest.approx((per_patch >= 0.2 * 64).mean(), abs=1e-4)
        assert s.stats["fg_pixel_fraction"] == pytest.approx(fg.mean(), abs=1e-4)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_objects"):
        SynthVQAConfig(min_objects=5, max_objects=2)
    with pytest.raises(ValueError, match=r"SynthVQAConfig.family_weights: unknown question families \['nope'\]"):
        SynthVQAConfig(family_weights={"nope": 1.0})
    # the check names every question maker and nothing else, so configs and generator agree on "a family"
    assert set(DEFAULT_FAMILY_WEIGHTS) == set(FAMILIES)
    with pytest.raises(ValueError, match="questions_per_image"):
        SynthVQAConfig(questions_per_image=0)
