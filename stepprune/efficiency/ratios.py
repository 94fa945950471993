"""The three latency ratios of the StepPrune inference path, each measured within one run (speed targets live in
benchmark output, not in timed unit tests):

* **selector / pruned prefill** — StepPrune's selection time (encoder, pointer loop, projector on the K kept
  tokens) over the prefill of the pruned sequence, medians of the same timed runs (spec target on an H100:
  <= 15 % at K = 64);
* **fast loop / plain loop, per step** — the default inference loop (CUDA graphs of ``sync_every`` steps on CUDA,
  the eager chunked loop elsewhere) over the plain eager loop that reads the stop flags after every step, on the
  same selector, memory and K;
* **pruned TTFT / vanilla TTFT** — StepPrune keeping K tokens against the unpruned model, timed round-robin in the
  same run (the paper's 1.88x speed-up is the inverse).

StepPrune is forced to keep exactly K tokens (``k_min = k_max = K``), so random weights time a K-token episode.
"""

from __future__ import annotations

from typing import Any

import torch

import stepprune
from stepprune.backbones.base import BackboneAdapter
from stepprune.efficiency.costs.stepprune import exactly_k
from stepprune.efficiency.latency import measure, random_prompt
from stepprune.selector.profile import loop_step_times


def measure_ratios(adapter: BackboneAdapter, selector: dict[str, Any], k: int, batches: list[int], *,
                   prompt: str = "What is in the image?", warmup: int = 3, repeats: int = 10,
                   image_size: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """One record of ratios (and the medians behind them) per batch size.

    Args:
        adapter: the backbone (its device and dtype are the ones timed; the selector runs in its dtype).
        selector: StepPrune's config (K is forced on top of it).
        k: tokens kept. batches: batch sizes. warmup, repeats: per measurement.
    """
    method = stepprune.build_method("stepprune", exactly_k(selector, k)).bind(adapter).to(dtype=adapter.dtype)
    vlms = {"vanilla": stepprune.PrunedVLM(adapter, stepprune.build_method("vanilla")),
            "stepprune": stepprune.PrunedVLM(adapter, method)}
    device = adapter.device
    fast = method.loop_engine(device)
    fast_name = {"graph": "graph", "eager": "chunked"}[fast]
    out = []
    for batch in batches:
        lat = measure(vlms, random_prompt(adapter, batch, prompt, image_size, seed), warmup=warmup,
                      repeats=repeats)
        sp, van = lat["stepprune"].parts, lat["vanilla"].parts
        n_tokens = int(adapter.vision_features(random_prompt(adapter, 1, prompt, image_size, seed)).num_tokens[0])
        step = loop_step_times(method.config, batch, n_tokens, ("plain", fast_name), steps=k, repeats=repeats,
                               device=device, dtype=adapter.dtype)
        out.append({
            "batch": batch, "k": k, "device": str(device), "dtype": str(adapter.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "fast_loop": fast_name,
            "selector_over_pruned_prefill": sp["selection"].median / sp["prefill"].median,
            "fast_over_plain_loop_per_step": step[fast_name] / step["plain"],
            "pruned_over_vanilla_ttft": sp["ttft"].median / van["ttft"].median,
            "selection_ms": sp["selection"].median, "pruned_prefill_ms": sp["prefill"].median,
            "pruned_ttft_ms": sp["ttft"].median, "vanilla_ttft_ms": van["ttft"].median,
            "plain_step_ms": step["plain"] * 1e3, "fast_step_ms": step[fast_name] * 1e3,
        })
    return out
