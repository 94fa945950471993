"""Benchmarks, one small module each, read from their official on-disk formats and scored by the official rules.
See :mod:`stepprune.benchmarks.base` for the interface every module provides."""

from stepprune.benchmarks.base import BenchmarkItem, RecordError

__all__ = ["BenchmarkItem", "RecordError"]
