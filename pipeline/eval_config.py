"""Config trees of the evaluation jobs: one cell (``jobs/evaluate.py``) and the matrix (``jobs/eval_matrix.py``).

A *cell* is one backbone x one method (with its budget) x one benchmark.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pipeline.config import BackboneConfig, RayConfig, TrackingConfig
from stepprune.benchmarks import get_benchmark
from stepprune.methods import method_class


@dataclasses.dataclass
class MethodRef:
    """A method to evaluate: a registered name and its config, or a trained checkpoint folder.

    Attributes:
        name: registry name (for a checkpoint, the method it holds; checked on load).
        config: the method's own config (budget/ratio are set per cell by the matrix).
        checkpoint: a selector folder written by training (``stepprune.checkpoint`` format), or None.
        label: the row label in tables (default: the name).
    """

    name: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        cls = method_class(self.name)
        if self.checkpoint is None and not cls.training_free:
            raise ValueError(f"method {self.name!r} must be trained: give its checkpoint folder")
        cls.config_class.from_dict({k: v for k, v in self.config.items()})

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclasses.dataclass
class BenchmarkRef:
    """A benchmark folder in its official layout, read by the registered module ``name``."""

    name: str
    folder: str
    split: str | None = None
    limit: int | None = None
    max_new_tokens: int = 16
    flavour: Literal["llava", "lmms"] = "llava"

    def __post_init__(self) -> None:
        get_benchmark(self.name)


@dataclasses.dataclass
class EvalJobConfig:
    """``jobs/evaluate.py``: one backbone, one method (+ budget), one benchmark."""

    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    method: MethodRef = dataclasses.field(default_factory=lambda: MethodRef("vanilla"))
    budget: int | None = None
    ratio: float | None = None
    benchmark: BenchmarkRef = dataclasses.field(
        default_factory=lambda: BenchmarkRef("synthvqa", "data/synthvqa/native/test"))
    batch_size: int = 16
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output: str = "runs/eval"
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)


@dataclasses.dataclass
class ActorConfig:
    """The evaluation actors: each loads its backbone once and answers shards of every cell."""

    num_actors: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0  # fractional GPUs are fine (e.g. 0.5: two actors share one GPU)
    torch_threads: int | None = 1
    max_restarts: int = 2
    fail_once_marker: str | None = None  # fault injection for tests: the first actor to run a shard dies once


@dataclasses.dataclass
class MatrixBackbone:
    """A backbone row group of the matrix."""

    name: str
    path: str
    dtype: str = "auto"


@dataclasses.dataclass
class MatrixMethod(MethodRef):
    """A method of the matrix; budgeted methods run once per budget (or ratio)."""

    budgets: list[int] | None = None
    ratios: list[float] | None = None


@dataclasses.dataclass
class TablesConfig:
    """How the paper's tables are computed."""

    vanilla: str = "vanilla"  # the label of the reference row
    retention_benchmarks: list[str] | None = None  # None = every benchmark column


@dataclasses.dataclass
class MatrixConfig:
    """``jobs/eval_matrix.py``: backbones x methods x budgets x benchmarks."""

    backbones: list[MatrixBackbone] = dataclasses.field(default_factory=list)
    methods: list[MatrixMethod] = dataclasses.field(default_factory=list)
    budgets: list[int] = dataclasses.field(default_factory=lambda: [192, 128, 64])
    benchmarks: list[BenchmarkRef] = dataclasses.field(default_factory=list)
    batch_size: int = 16
    output: str = "runs/eval_matrix"
    actors: ActorConfig = dataclasses.field(default_factory=ActorConfig)
    tables: TablesConfig = dataclasses.field(default_factory=TablesConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    synthvqa: dict[str, Any] | None = None  # generate SynthVQA first when its folders are missing
