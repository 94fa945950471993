"""Shared SynthVQA fixtures: in-memory samples and one small generated dataset per test session."""

from __future__ import annotations

import pytest

from stepprune.data.synthvqa import SynthVQAConfig, generate_synthvqa, make_sample

SMALL = dict(seed=7, n_train_images=8, n_val_images=30, n_test_images=30, questions_per_image=8)


@pytest.fixture(scope="session")
def cfg() -> SynthVQAConfig:
    return SynthVQAConfig(**SMALL)


@pytest.fixture(scope="session")
def samples(cfg):
    """80 val images in memory: enough for every family and subfamily to occur."""
    return [make_sample(cfg, "val", i) for i in range(80)]


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """(out_dir, manifest) of one small generated dataset."""
    out = tmp_path_factory.mktemp("synthvqa")
    return out, generate_synthvqa(out, **SMALL)
