"""FLOPs of a pruned VLM's first token, counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta
device: real model code at real shapes, no weights, on a CPU.

The counter records the matrix products (``mm``/``addmm``/``bmm``/convolution/SDPA; a multiply-add is 2 FLOPs),
not elementwise work (norms, activations, softmax), the usual convention. Components, per batch:

* **vision** — the vision tower (LLaVA: all 24 CLIP layers, as HF runs them with ``output_hidden_states``; Qwen:
  the windowed ViT including its own merger pass);
* **projector** — the frozen projector / merger over the rows the method projects (:attr:`MethodCost.projected`);
* **method** — the method's own work (:attr:`MethodCost.overhead`);
* **prefill** — every LLM decoder layer over ``text + visual tokens entering that layer`` (causal attention over the
  full square, as SDPA computes it with a mask), the final norm and the LM head on the last position (the first
  token), i.e. what :meth:`~stepprune.backbones.llm.LLMRunner.generate` runs before its first token.

Example::

    scene = MetaScene(build_adapter(real_config("llava15_7b")), PromptShape())
    flops = method_flops(scene, build_method("fastv", budget=64))
    flops.total / 1e12
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from itertools import groupby

import torch
from torch.utils.flop_counter import FlopCounterMode

from stepprune.backbones.llm import causal_mask
from stepprune.efficiency.costs import Geometry, MethodCost, method_cost
from stepprune.efficiency.scene import META, MetaScene
from stepprune.methods.base import PruningMethod


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products ``fn()`` runs (no grad)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclasses.dataclass
class FlopBreakdown:
    """One method's first-token FLOPs for one batch (module docstring), with the visual-token schedule."""

    vision: int
    projector: int
    method: int
    prefill: int
    visual: int
    per_layer: list[int]

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.method + self.prefill

    @property
    def mean_per_layer(self) -> float:
        return sum(self.per_layer) / len(self.per_layer)


def geometry(scene: MetaScene) -> Geometry:
    """The scene's shapes for the cost models."""
    return Geometry(scene.family, scene.adapter.num_layers, scene.num_tokens, scene.shape, scene.batch)


def prefill_flops(scene: MetaScene, per_layer: list[int]) -> int:
    """The LLM prefill with ``per_layer[l]`` visual tokens entering layer l, plus the first token's LM head.

    Layers that see the same count share one state, rotary table and mask, as in the runner (which rebuilds them
    only after a drop).
    """
    runner = scene.adapter.runner

    def run() -> None:
        layer = 0
        hidden = None
        for visual, group in groupby(per_layer):
            st = scene.state(visual)
            pe = runner._rotary(st.hidden, st.positions)
            mask = runner._mask(causal_mask(st.valid), st.hidden.dtype)
            hidden = st.hidden
            for _ in list(group):
                hidden = runner.layers[layer](hidden, attention_mask=mask, position_embeddings=pe,
                                              past_key_values=None, use_cache=False)
                layer += 1
        runner.logits(runner.text_model.norm(hidden)[:, -1])

    return count_flops(run)


def vision_flops(scene: MetaScene) -> int:
    """The vision tower on the scene's batch (also keeps its features for the method overheads)."""
    return count_flops(scene.run_vision)


def projector_flops(scene: MetaScene, rows: int) -> int:
    """The frozen projector / merger on ``rows`` visual tokens per sample."""
    if rows == 0:
        return 0
    width = scene.vision().tokens.shape[-1]
    return count_flops(lambda: scene.adapter.project(torch.empty(scene.batch, rows, width, device=META)))


def method_flops(scene: MetaScene, method: PruningMethod, k: int | None = None,
                 vision: int | None = None) -> FlopBreakdown:
    """Every component for one method on the scene.

    Args:
        k: the kept count to cost for an adaptive method (StepPrune).
        vision: the vision tower's FLOPs when already counted for this scene (it does not depend on the method).
    """
    cost: MethodCost = method_cost(method, geometry(scene), k)
    vis = vision if vision is not None and scene._vision is not None else vision_flops(scene)
    if cost.setup is not None:
        cost.setup(scene)
    overhead = count_flops(lambda: cost.overhead(scene)) if cost.overhead is not None else 0
    if cost.repeated is not None and cost.repeats:
        overhead += cost.repeats * count_flops(lambda: cost.repeated(scene))
    return FlopBreakdown(vis, projector_flops(scene, cost.projected), overhead, prefill_flops(scene, cost.per_layer),
                         cost.visual, list(cost.per_layer))
