"""Fixtures of the method tests: eager-attention copies of the tiny backbones, for independent references."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def eager_llava(tiny_llava_dir):
    import stepprune

    return stepprune.load_backbone(tiny_llava_dir, attn_implementation="eager")


@pytest.fixture(scope="session")
def eager_qwen(tiny_qwen_dir):
    import stepprune

    return stepprune.load_backbone(tiny_qwen_dir, attn_implementation="eager")


@pytest.fixture
def eager(adapter, request):
    """The eager-attention copy of the ``adapter`` under test (same weights, same folder)."""
    return request.getfixturevalue("eager_llava" if adapter.family == "llava" else "eager_qwen")
