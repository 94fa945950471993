"""One SynthVQA sample end to end: seed -> scene -> pixels -> geometry -> questions -> records.

Each image has its own generator, seeded by ``(seed, split code, index)``; the scene and the questions draw
from two independent child streams, so changing the question mix never changes an image.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from stepprune.data.synthvqa.config import SPLITS, SynthVQAConfig
from stepprune.data.synthvqa.layout import sample_scene
from stepprune.data.synthvqa.patches import ElementGeometry, complexity_stats, coverage, element_geometry
from stepprune.data.synthvqa.questions import FAMILY_BENCHMARK, Question, SceneView, make_questions
from stepprune.data.synthvqa.render import Rendered, render_scene
from stepprune.data.synthvqa.scene import Scene
from stepprune.data.synthvqa.shapes import text_mask

SPLIT_CODES = {split: code for code, split in enumerate(SPLITS, start=1)}


@dataclasses.dataclass
class Sample:
    """A generated image with everything derived from it.

    Attributes:
        scene: the scene description.
        rendered: its pixels and owner map.
        geometry: visible geometry per element id.
        stats: complexity stats (n_objects, n_texts, fg_patch_fraction, fg_pixel_fraction).
        questions: the questions asked about it, in order.
    """

    scene: Scene
    rendered: Rendered
    geometry: list[ElementGeometry]
    stats: dict[str, Any]
    questions: list[Question]

    @property
    def image_file(self) -> str:
        """Path of the image relative to the split folder."""
        return f"images/{self.scene.image_id}.png"


def sample_seeds(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The (scene, questions) generators of one image."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    scene_seq, question_seq = np.random.SeedSequence([seed, SPLIT_CODES[split], index]).spawn(2)
    return np.random.default_rng(scene_seq), np.random.default_rng(question_seq)


def analyse(scene: Scene) -> tuple[Rendered, list[ElementGeometry], dict[str, Any]]:
    """Render a scene and measure it: pixels, per-element visible geometry, complexity stats."""
    rendered = render_scene(scene)
    windows = [(o.x, o.y, o.x + o.extent, o.y + o.extent) for o in scene.objects]
    for t in scene.texts:
        h, w = text_mask(t.word, t.font_size).shape
        windows.append((t.x, t.y, t.x + w, t.y + h))
    counts = coverage(rendered.owner, len(windows))
    return rendered, element_geometry(rendered.owner, counts, windows), complexity_stats(
        counts, len(scene.objects), len(scene.texts))


def make_sample(cfg: SynthVQAConfig, split: str, index: int) -> Sample:
    """Generate image ``index`` of ``split`` (deterministic in ``cfg.seed``, ``split``, ``index``)."""
    scene_rng, question_rng = sample_seeds(cfg.seed, split, index)
    scene = sample_scene(scene_rng, cfg, split, index)
    rendered, geometry, stats = analyse(scene)
    questions = make_questions(SceneView(scene, geometry), question_rng, cfg.questions_per_image,
                               cfg.family_weights)
    return Sample(scene, rendered, geometry, stats, questions)


def scene_record(sample: Sample) -> dict[str, Any]:
    """The ``scenes.jsonl`` row: the scene plus each element's visible geometry and the image's stats."""
    rec = sample.scene.to_dict()
    rec["image"] = sample.image_file
    for el in rec["objects"] + rec["texts"]:
        g = sample.geometry[el["id"]]
        el.update(visible_pixels=g.pixels, bbox=list(g.bbox), centroid=list(g.centroid),
                  patches=list(g.patches))
    rec["stats"] = dict(sample.stats)
    return rec


def question_records(sample: Sample) -> list[dict[str, Any]]:
    """The ``questions.jsonl`` rows of one image (qid = ``"<image_id>_q<k>"``)."""
    sc = sample.scene
    return [{
        "qid": f"{sc.image_id}_q{k:02d}",
        "image_id": sc.image_id,
        "image": sample.image_file,
        "split": sc.split,
        "family": q.family,
        "subfamily": q.subfamily,
        "benchmark": FAMILY_BENCHMARK[q.family],
        "question": q.question,
        "prompt": q.prompt,
        "answer": q.answer,
        "choices": q.choices,
        "hint": q.hint,
        "ocr_tokens": q.ocr_tokens,
        "pair_id": q.pair_id,
        "referents": list(q.referents),
        "evidence": list(q.evidence),
        "scene_stats": dict(sample.stats),
        "extra": q.extra,
    } for k, q in enumerate(sample.questions)]
