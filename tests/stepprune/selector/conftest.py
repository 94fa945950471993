"""Fixtures for the StepPrune selector tests: the two tiny random backbones and small prepared batches."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

import stepprune
from stepprune.backbones.tiny import build_tiny_llava, build_tiny_qwen2_5_vl
from tests.conftest import single_threaded

QUESTIONS = [
    "What color is the square?",
    "How many objects are there in the image?",
    "Is there a red circle in the image?",
    "Which shape is left of the blue triangle?",
]
ANSWERS = ["red", "three", "yes", "circle"]

# Tiny selector widths used throughout the tests.
SMALL = {"d": 32, "heads": 4, "k_max": 24, "total_steps": 100}


def images(n: int, seed: int = 0, sizes: list[tuple[int, int]] | None = None) -> list[Image.Image]:
    """n random RGB images (96x96 unless ``sizes`` gives (width, height) per image)."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [(96, 96)] * n
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def batch(adapter, n: int = 3, seed: int = 0, answers: bool = True, sizes=None, pick: list[int] | None = None):
    """A prepared batch of n samples (sample i: random image i, question/answer i mod 4), or only the samples
    ``pick`` of those n (the same images and questions, in a smaller batch)."""
    imgs = images(n, seed, sizes)
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    ans = [ANSWERS[i % len(ANSWERS)] for i in range(n)]
    pick = list(range(n)) if pick is None else pick
    return adapter.prepare([imgs[i] for i in pick], [qs[i] for i in pick],
                           [ans[i] for i in pick] if answers else None, keys=[str(i) for i in pick])


def context(adapter, prompt) -> stepprune.SelectionContext:
    return stepprune.SelectionContext(adapter, prompt, adapter.vision_features(prompt))


@pytest.fixture(scope="session")
def llava_path(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="session")
def qwen_path(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="session")
def llava(llava_path):
    return stepprune.load_backbone(llava_path)


@pytest.fixture(scope="session")
def qwen(qwen_path):
    return stepprune.load_backbone(qwen_path)


@pytest.fixture(scope="session")
def make_batch():
    """``make_batch(adapter, n=3, seed=0, answers=True, sizes=None, pick=None)`` -> PromptBatch."""
    return batch


@pytest.fixture(scope="session")
def make_context():
    """``make_context(adapter, prompt)`` -> SelectionContext (runs the vision tower)."""
    return context


@pytest.fixture()
def small():
    """Tiny selector config values (a fresh dict per test)."""
    return dict(SMALL)



@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


@pytest.fixture(scope="session")
def single_thread():
    """The :func:`single_threaded` context manager, for module-scoped fixtures that do real work."""
    return single_threaded
