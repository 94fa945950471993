"""Wall-clock latency of a pruned VLM's first token, split into its parts, for several methods in one run.

One timed run of :func:`first_token` is exactly the path :meth:`stepprune.PrunedVLM.generate` takes up to its first
token, with a clock read (after a device synchronisation on CUDA) between the parts:

* **vision** — the vision tower (:meth:`PrunedVLM.context`);
* **selection** — pre-LLM selection (or merging) and splicing the LLM batch, plus building the in-LLM hooks; for
  StepPrune the encoder, the pointer loop and the projector on the kept tokens. In-LLM methods score *inside* the
  prefill, so their own work is in the next part;
* **prefill** — the LLM over the (pruned) sequence with the method's hooks, the LM head on the last position and
  the greedy first token;
* **ttft** — time to first token, the three together, from the first clock read to the last.

:func:`measure` warms every method up, then runs the repeats round-robin (method 1, method 2, ..., method 1, ...),
so slow drifts of a shared machine hit every method alike; it reports the median and the quartiles.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.types import PromptBatch
from stepprune.pruned_vlm import PrunedVLM

PARTS = ("vision", "selection", "prefill", "ttft")


@dataclasses.dataclass
class Stats:
    """Summary of repeated timings, in milliseconds."""

    median: float
    p25: float
    p75: float
    min: float
    n: int

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        ms = sorted(s * 1e3 for s in seconds)
        if len(ms) == 1:
            return cls(ms[0], ms[0], ms[0], ms[0], 1)
        q = statistics.quantiles(ms, n=4, method="inclusive")
        return cls(statistics.median(ms), q[0], q[2], ms[0], len(ms))


@dataclasses.dataclass
class FirstToken:
    """One timed run: the greedy first token (B,), visual tokens handed to the LLM (B,), the mean over layers of
    the visual tokens entering each LLM layer (B,), and the seconds per part (:data:`PARTS`)."""

    token: Tensor
    kept: Tensor
    mean_per_layer: Tensor
    seconds: dict[str, float]


def input_size(adapter: BackboneAdapter, image_size: int | None = None) -> int:
    """The square input resolution to time: LLaVA's CLIP resolution; for Qwen2.5-VL ``image_size`` (default: the
    resolution giving 24 x 24 = 576 merged tokens)."""
    if adapter.family == "llava":
        return int(adapter.model.config.vision_config.image_size)
    from stepprune.efficiency.backbones import default_image_size

    return image_size or default_image_size(adapter.model.config)


def random_prompt(adapter: BackboneAdapter, batch: int, text: str, image_size: int | None = None,
                  seed: int = 0) -> PromptBatch:
    """A batch of ``batch`` seeded random images (:func:`input_size`) asked the same question ``text``."""
    size = input_size(adapter, image_size)
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(batch)]
    return adapter.prepare(images, [text] * batch, keys=[str(i) for i in range(batch)])


def _clock(device: torch.device):
    if device.type == "cuda":
        def read() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return read
    return time.perf_counter


@torch.no_grad()
def first_token(vlm: PrunedVLM, prompt: PromptBatch) -> FirstToken:
    """Runs the batch to its first token, timing each part (module docstring)."""
    clock = _clock(vlm.adapter.device)
    t0 = clock()
    ctx = vlm.context(prompt)
    t1 = clock()
    inputs, visual = vlm.llm_inputs(ctx)
    drops, evicts = vlm.method.llm_hooks(ctx), vlm.method.decode_hooks(ctx)
    t2 = clock()
    runner = vlm.adapter.runner
    res = runner.prefill(inputs, drops, evicts, use_cache=True)
    token = runner.logits(res.hidden[:, -1]).argmax(dim=-1)
    t3 = clock()
    return FirstToken(token, visual.count, res.visual_per_layer.float().mean(dim=1),
                      {"vision": t1 - t0, "selection": t2 - t1, "prefill": t3 - t2, "ttft": t3 - t0})


@dataclasses.dataclass
class Latency:
    """One method's timings over the repeats: per-part :class:`Stats`, and its mean visual tokens (handed to the
    LLM, and entering an LLM layer on average)."""

    parts: dict[str, Stats]
    kept: float
    mean_per_layer: float


def measure(vlms: Mapping[str, PrunedVLM], prompt: PromptBatch, *, warmup: int = 3, repeats: int = 10
            ) -> dict[str, Latency]:
    """Times every method on the same batch in one run (warm-up first, then round-robin repeats).

    Args:
        vlms: label -> backbone + method (typically one adapter shared by all).
        prompt: the batch (its size is the batch size timed).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    last: dict[str, FirstToken] = {}
    for label, vlm in vlms.items():
        for _ in range(warmup):
            first_token(vlm, prompt)
    samples: dict[str, dict[str, list[float]]] = {label: {p: [] for p in PARTS} for label in vlms}
    for _ in range(repeats):
        for label, vlm in vlms.items():
            run = last[label] = first_token(vlm, prompt)
            for part, s in run.seconds.items():
                samples[label][part].append(s)
    return {label: Latency({p: Stats.of(v) for p, v in samples[label].items()},
                           float(last[label].kept.float().mean()), float(last[label].mean_per_layer.mean()))
            for label in vlms}
