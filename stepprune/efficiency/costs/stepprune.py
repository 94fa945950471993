"""Cost model of StepPrune: the cross-modal encoder over [N image tokens ; question], the one memory GEMM (every
decoder layer's cross-attention K/V and the pointer keys), the KV-cached pointer loop for the steps an episode of
K picks takes, and the projector on the K kept raw tokens.

The selector runs for real on meta tensors: a meta copy of the method (same config, built on the meta adapter) and
the same :func:`~stepprune.selector.loop.run_steps` the inference loop and its CUDA graphs run; the first step is
counted with the encoder and the others as repeats of one step (identical shapes over the static cache). An
episode that keeps K < cap tokens runs K + 1 steps (the last one picks the stop slot); at the cap it runs K. The
loop's static self-attention cache spans K_max slots, so each step attends over K_max keys (masked), as it runs.
The chunked loop may run up to ``sync_every - 1`` lock-step steps past the last episode end; those are not
counted (about 69 MFLOPs each at LLaVA-1.5-7B width).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from stepprune.efficiency.costs.base import Geometry, MethodCost, cost_model
from stepprune.efficiency.scene import MetaScene
from stepprune.selector.loop import LoopState, run_steps, selection_limits


def episode_steps(k: int, cap: int) -> int:
    """Loop steps of an episode that keeps ``k`` tokens under a cap of ``cap``: K + 1 (stop) or K (capped)."""
    if not 0 <= k <= cap:
        raise ValueError(f"stepprune: cannot keep {k} tokens with a cap of {cap}")
    return k if k == cap else k + 1


def meta_selector(method, scene: MetaScene):
    """A copy of the StepPrune ``method`` (same config, no weights) built on the scene's meta adapter."""
    with torch.device("meta"):  # build (and "initialise") directly on meta: no CPU weights, no random init
        return type(method)(dataclasses.replace(method.config)).bind(scene.adapter)


def exactly_k(config: dict, k: int) -> dict:
    """StepPrune's config that picks exactly k tokens (the stop slot blocked below k, the cap at k): an episode of
    k steps whatever the weights (one step fewer than a trained selector that stops by itself after k picks)."""
    return {**config, "k_min": k, "k_max": k, "k_max_ratio": None}


@cost_model("stepprune", fix_k=exactly_k)
def stepprune(method, g: Geometry, k: int | None) -> MethodCost:
    cfg = method.config
    cap = min(cfg.k_max, g.tokens)
    if cfg.k_max_ratio is not None:
        cap = min(cap, max(1, math.ceil(g.tokens * cfg.k_max_ratio)))
    steps = episode_steps(k, cap)

    held: dict = {}

    def setup(scene: MetaScene) -> None:  # building (and initialising) the meta copy is not the method's work
        held["sel"] = meta_selector(method, scene)

    def overhead(scene: MetaScene) -> None:  # encoder, memory GEMM and the first loop step
        sel = held["sel"]
        vision = scene.vision()
        text, text_mask = scene.question_embeds()
        mem = sel.decoder.memory(sel.encoder(vision.tokens, vision.token_mask, text, text_mask, 1.0))
        B, slots, _ = mem.z.shape
        k_min, limit = selection_limits(vision.num_tokens, cfg.k_min, cfg.k_max, cfg.k_max_ratio)
        state = LoopState.allocate(sel.decoder, B, slots, cfg.k_max, mem.z.device, mem.z.dtype)
        held.update(mem=mem, state=state.reset_(sel.decoder, vision.token_mask), limits=(k_min, limit))
        step(scene)

    def step(scene: MetaScene) -> None:  # one more step: same shapes every step (static cache of K_max slots)
        run_steps(held["sel"].decoder, held["mem"], held["state"], *held["limits"], 1, cfg.tau)

    return MethodCost(k, [k] * g.depth, k, overhead, repeated=step, repeats=steps - 1, setup=setup)
