"""Config tree of the efficiency job (``jobs/efficiency.py``): the paper's Table 3 — visual tokens, TFLOPs, latency
and speed-up against vanilla — for any backbone, methods and budgets.

Two independent parts, each optional:

* ``flops`` — counted on the meta device at a real config (no weights; CPU, seconds);
* ``latency`` — measured on a real backbone (random weights at a real config on a GPU, or the tiny backbone on a
  CPU), every method in the same run, at one or more batch sizes.

Rows: a budgeted method gets one row per budget; a method that chooses its own K (StepPrune) gets one row per
budget with K = that budget (FLOPs: an episode of K picks and a stop step; latency: the selector forced to pick
exactly K, ``k_min = k_max = K``, since random or untrained weights would stop anywhere); the others one row.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pipeline.config import TrackingConfig
from stepprune.methods import method_class


@dataclasses.dataclass
class EfficiencyMethod:
    """A method of the table.

    Attributes:
        name: registry name.
        config: its config (budget / K are set per row).
        checkpoint: trained weights (optional here: costs and timings do not depend on the weights, except for
            where an adaptive method stops, which the rows fix anyway).
        label: the row label (default: the name).
        budgets: this method's budgets (None: the job's).
    """

    name: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint: str | None = None
    label: str | None = None
    budgets: list[int] | None = None

    def __post_init__(self) -> None:
        method_class(self.name).config_class.from_dict(self.config)  # unknown or invalid keys fail at load time

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclasses.dataclass
class PromptLayout:
    """Text tokens around the image for the FLOP count (defaults: LLaVA-1.5's VQA prompt, 60 text tokens)."""

    prefix_tokens: int = 35
    suffix_tokens: int = 25
    question_tokens: int = 20


@dataclasses.dataclass
class FlopsConfig:
    """FLOPs on the meta device.

    Attributes:
        backbone: ``"llava15_7b"``, ``"qwen2_5_vl_7b"`` (the public configs) or a folder with a config.json.
        image_size: input resolution (Qwen2.5-VL; None: 672 px = 576 merged tokens).
        batch: samples per counted batch (FLOPs are reported per sample).
    """

    enabled: bool = True
    backbone: str = "llava15_7b"
    image_size: int | None = None
    batch: int = 1
    prompt: PromptLayout = dataclasses.field(default_factory=PromptLayout)


@dataclasses.dataclass
class LatencyConfig:
    """Measured time to first token.

    Attributes:
        backbone: ``"tiny"`` (the committed ``checkpoints/synthvqa-llava-tiny`` when present, else the tiny LLaVA
            built offline), ``"tiny_qwen"``, a real config name with random weights (``"llava15_7b"``,
            ``"qwen2_5_vl_7b"``), or a backbone folder.
        device, dtype: where and how the backbone runs (``auto``: CUDA + bfloat16 when available, else CPU +
            float32).
        selector_dtype: ``"backbone"`` runs trainable selectors in the backbone's dtype, ``"float32"`` keeps fp32.
        batches: batch sizes timed (each its own columns).
        warmup, repeats: untimed runs per method, then timed round-robin repeats.
        threads: torch intra-op threads during the measurement (None: leave as is).
        image_size: input resolution for Qwen2.5-VL backbones (None: 576 merged tokens).
        prompt: the question asked of every image.
        seed: image and weight seed.
    """

    enabled: bool = False
    backbone: str = "tiny"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: str = "auto"
    selector_dtype: Literal["backbone", "float32"] = "backbone"
    batches: list[int] = dataclasses.field(default_factory=lambda: [1, 8])
    warmup: int = 3
    repeats: int = 10
    threads: int | None = 1
    image_size: int | None = None
    prompt: str = ("What is the color of the largest object in the image?\n"
                   "Answer the question using a single word or phrase.")
    seed: int = 0


@dataclasses.dataclass
class TargetsConfig:
    """Checks reported for one row (not failures): set a bound to None to skip it.

    Attributes:
        method, budget: the row checked (its label and budget).
        max_method_flops_share: the method's own FLOPs / the pruned prefill's.
        max_total_tflops: total TFLOPs per sample.
        max_selection_time_share: measured selection / prefill time (median, batch 1).
        min_ttft_speedup: vanilla TTFT / the row's TTFT, per timed batch size.
    """

    method: str = "stepprune"
    budget: int = 64
    max_method_flops_share: float | None = 0.05
    max_total_tflops: float | None = 2.1
    max_selection_time_share: float | None = 0.15
    min_ttft_speedup: float | None = 1.88


@dataclasses.dataclass
class EfficiencyJobConfig:
    """``jobs/efficiency.py``.

    Attributes:
        methods: the rows' methods (empty: every registered method, the reference first).
        budgets: budgets of budgeted methods and K of adaptive ones unless a method lists its own.
        vanilla: the label of the reference row (speed-ups are against it, measured in the same run).
        name: the output folder under ``output`` and the MLflow run name.
    """

    methods: list[EfficiencyMethod] = dataclasses.field(default_factory=list)
    budgets: list[int] = dataclasses.field(default_factory=lambda: [192, 128, 64])
    vanilla: str = "vanilla"
    flops: FlopsConfig = dataclasses.field(default_factory=FlopsConfig)
    latency: LatencyConfig = dataclasses.field(default_factory=LatencyConfig)
    targets: TargetsConfig = dataclasses.field(default_factory=TargetsConfig)
    output: str = "runs/efficiency"
    name: str = "efficiency"
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if not (self.flops.enabled or self.latency.enabled):
            raise ValueError("enable flops, latency or both")
        if self.flops.batch < 1 or any(b < 1 for b in self.latency.batches) or self.latency.repeats < 1:
            raise ValueError("batch sizes and repeats must be >= 1")
        if self.latency.enabled and not self.latency.batches:
            raise ValueError("latency.batches is empty")

