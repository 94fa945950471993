"""Shared fixtures for the benchmark tests: one tiny copy of every official layout per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepprune.benchmarks.fixtures import write_all


@pytest.fixture(scope="session")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{benchmark name: folder}`` of the default fixtures (read-only: tests that edit write their own)."""
    return write_all(tmp_path_factory.mktemp("benchmarks"))
