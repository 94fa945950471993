"""Sampling a scene: background, words and shapes, placed under the occlusion rules.

Rules (each one keeps every question answerable without ambiguity):

* words are placed first, never overlap each other (4 px apart) and are never touched by shapes (4 px margin),
  so a word is always fully legible;
* shapes may overlap, but a shape may only overlap or touch (2 px) shapes of *other* colors: two same-colored
  shapes never merge into one blob that could be counted as one;
* placing a shape on top must leave every shape below it at least ``min_visible_fraction`` visible;
* everything stays 2 px inside the image.

A shape or word that finds no valid spot in 40 tries is dropped, so the recorded counts are the drawn ones.
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.config import SynthVQAConfig
from stepprune.data.synthvqa.scene import Background, Scene, SceneObject, TextSnippet
from stepprune.data.synthvqa.shapes import dilated, shape_mask, text_mask
from stepprune.data.synthvqa.vocab import (
    COLOR_NAMES,
    COLOR_PRIOR,
    FONT_SIZES,
    IMAGE_SIZE,
    SHAPE_PRIOR,
    SHAPES,
    SIZE_JITTER,
    SIZE_NAMES,
    SIZE_PRIOR,
    SIZES,
    WORDS,
)

_TRIES = 40
_BORDER = 2
_TEXT_GAP = 4
_SAME_COLOR_GAP = 2


def _pale(rng: np.random.Generator) -> tuple[int, int, int]:
    # Light, low-saturation colors: far from every palette color, so shapes and words always stand out.
    base = int(rng.integers(205, 246))
    r, g, b = (int(np.clip(base + rng.integers(-12, 13), 190, 250)) for _ in range(3))
    return r, g, b


def sample_background(rng: np.random.Generator) -> Background:
    """A plain, gradient or lightly noisy pale background, each kind equally likely."""
    kind = ("plain", "gradient", "noise")[int(rng.integers(3))]
    color = _pale(rng)
    if kind == "gradient":
        direction = ("horizontal", "vertical", "diagonal")[int(rng.integers(3))]
        return Background(kind, color, color2=_pale(rng), direction=direction)
    if kind == "noise":
        return Background(kind, color, noise=int(rng.integers(6, 15)), noise_seed=int(rng.integers(2**31)))
    return Background(kind, color)


def _place_texts(rng: np.random.Generator, n: int,
                 reserved: np.ndarray) -> list[tuple[str, str, int, int, int]]:
    words = [str(w) for w in rng.choice(WORDS, size=n, replace=False)]
    # distinct colors: "the red word" is always unique
    colors = [str(c) for c in rng.choice(COLOR_NAMES, size=n, replace=False)]
    placed = []
    for word, color in zip(words, colors):
        size = int(FONT_SIZES[int(rng.integers(len(FONT_SIZES)))])
        h, w = text_mask(word, size).shape
        for _ in range(_TRIES):
            x = int(rng.integers(_BORDER, IMAGE_SIZE - w - _BORDER + 1))
            y = int(rng.integers(_BORDER, IMAGE_SIZE - h - _BORDER + 1))
            y0, x0 = max(0, y - _TEXT_GAP), max(0, x - _TEXT_GAP)
            if reserved[y0:y + h + _TEXT_GAP, x0:x + w + _TEXT_GAP].any():
                continue
            reserved[y0:y + h + _TEXT_GAP, x0:x + w + _TEXT_GAP] = True
            placed.append((word, color, size, x, y))
            break
    return placed


def sample_scene(rng: np.random.Generator, cfg: SynthVQAConfig, split: str, index: int) -> Scene:
    """Draw one scene description from ``rng`` (module docstring rules)."""
    background = sample_background(rng)
    n_texts = int(rng.integers(0, cfg.max_texts + 1))
    n_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))

    # Text boxes (plus margin) are off limits to shapes.
    reserved = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    texts = _place_texts(rng, n_texts, reserved)

    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, np.int16)
    objects: list[SceneObject] = []
    totals: list[int] = []
    visible: list[int] = []
    for _ in range(n_objects):
        color = str(COLOR_NAMES[int(rng.choice(len(COLOR_NAMES), p=COLOR_PRIOR))])
        shape = str(SHAPES[int(rng.choice(len(SHAPES), p=SHAPE_PRIOR))])
        size = str(SIZE_NAMES[int(rng.choice(len(SIZE_NAMES), p=SIZE_PRIOR))])
        extent = SIZES[size] + int(rng.integers(-SIZE_JITTER, SIZE_JITTER + 1))
        mask = shape_mask(shape, extent)
        halo = dilated(("shape", shape, extent), _SAME_COLOR_GAP)
        g = _SAME_COLOR_GAP
        for _ in range(_TRIES):
            x = int(rng.integers(_BORDER, IMAGE_SIZE - extent - _BORDER + 1))
            y = int(rng.integers(_BORDER, IMAGE_SIZE - extent - _BORDER + 1))
            if reserved[y:y + extent, x:x + extent][mask].any():
                continue
            near = owner[y - g:y + extent + g, x - g:x + extent + g][halo]
            near_ids = np.unique(near[near >= 0])
            if any(objects[i].color == color for i in near_ids):
                continue
            under = owner[y:y + extent, x:x + extent][mask]
            hidden = np.bincount(under[under >= 0], minlength=len(objects))
            if any(visible[i] - hidden[i] < cfg.min_visible_fraction * totals[i]
                   for i in np.flatnonzero(hidden)):
                continue
            k = len(objects)
            owner[y:y + extent, x:x + extent][mask] = k
            for i in np.flatnonzero(hidden):
                visible[i] -= int(hidden[i])
            objects.append(SceneObject(id=k, shape=shape, color=color, size=size, extent=extent, x=x, y=y))
            totals.append(int(mask.sum()))
            visible.append(int(mask.sum()))
            break

    first_text = len(objects)
    snippets = tuple(TextSnippet(id=first_text + j, word=w, color=c, font_size=s, x=x, y=y)
                     for j, (w, c, s, x, y) in enumerate(texts))
    ocr = tuple(str(w) for w in rng.permutation([t.word for t in snippets])) if snippets else ()
    return Scene(image_id=f"{split}_{index:06d}", split=split, index=index, background=background,
                 objects=tuple(objects), texts=snippets, ocr_tokens=ocr)
