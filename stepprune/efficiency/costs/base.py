"""What a method costs, described at the shape level: the per-method cost description and its registry.

A method's work on one batch splits into parts that meta tensors can run and parts that only exist with data
(which tokens win, how many an adaptive rule keeps). The data-dependent part is replaced by what it *produces*,
computed from the method's own config and helpers; the rest is run for real on meta tensors:

* :attr:`MethodCost.per_layer` — visual tokens entering each LLM layer (what the runner reports as
  ``visual_per_layer``; checked against it on the tiny backbone), from which the prefill is counted;
* :attr:`MethodCost.projected` — rows that go through the frozen projector / merger (some methods project every
  token and then pick, some project only what they keep);
* :attr:`MethodCost.overhead` — a callable that runs the method's own scoring code (attention rows, raters, the
  selector's encoder and pointer loop, merges) on a :class:`~stepprune.efficiency.scene.MetaScene` at those
  shapes; its FLOPs are the method column. Where a method step is a data-dependent gather (a clustering, a
  range layout) its matrix product is run at the shape it has; each cost model's docstring says what it runs.
  A part that repeats with identical shapes (StepPrune's loop steps over a static cache) is given as
  :attr:`MethodCost.repeated`, counted once and multiplied by :attr:`MethodCost.repeats` — elementwise ops on
  meta tensors run through Python reference kernels, so 192 counted steps would take ~10 s for the same number.
  :attr:`MethodCost.setup` runs uncounted first (e.g. building a meta copy of a trainable method).

Cost models are registered per method name (:func:`cost_model`); every registered method must have one (a test).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from stepprune.efficiency.scene import MetaScene, PromptShape
from stepprune.methods.base import PruningMethod


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The shapes a cost model needs (no tensors).

    Attributes:
        family: backbone family (``"llava"``, ``"qwen2_5_vl"``).
        depth: LLM decoder layers.
        tokens: N, visual tokens of one image.
        prompt: the text layout around the image.
        batch: B.
    """

    family: str
    depth: int
    tokens: int
    prompt: PromptShape
    batch: int = 1

    def context(self) -> SimpleNamespace:
        """The fields of a :class:`~stepprune.methods.base.SelectionContext` that the methods' schedule helpers
        read (``adapter.num_layers``, ``adapter.family``, ``vision.num_tokens``, ``batch_size``), so their own
        layer mapping and stage rules are reused instead of re-derived."""
        return SimpleNamespace(adapter=SimpleNamespace(num_layers=self.depth, family=self.family),
                               vision=SimpleNamespace(num_tokens=torch.full((self.batch,), self.tokens)),
                               batch_size=self.batch)


Overhead = Callable[[MetaScene], None]


@dataclasses.dataclass
class MethodCost:
    """One method's work on one batch at the shape level (module docstring).

    Attributes:
        visual: visual tokens handed to the LLM per sample (after pre-LLM selection or merging).
        per_layer: visual tokens entering each LLM layer (length = depth).
        projected: rows per sample through the projector / merger.
        overhead: the method's own work on meta tensors, or None (indexing only).
        repeated: a further part of it, run ``repeats`` more times with the same shapes (counted once).
        repeats: how many more times ``repeated`` runs.
        setup: uncounted preparation, run before ``overhead``.
    """

    visual: int
    per_layer: list[int]
    projected: int
    overhead: Overhead | None = None
    repeated: Overhead | None = None
    repeats: int = 0
    setup: Overhead | None = None

    @classmethod
    def before_llm(cls, g: Geometry, visual: int, projected: int, overhead: Overhead | None = None) -> MethodCost:
        """A pre-LLM method: ``visual`` tokens reach every layer."""
        return cls(visual, [visual] * g.depth, projected, overhead)

    @property
    def mean_per_layer(self) -> float:
        return sum(self.per_layer) / len(self.per_layer)


CostModel = Callable[[PruningMethod, Geometry, "int | None"], MethodCost]
FixK = Callable[[dict[str, Any], int], dict[str, Any]]
COST_MODELS: dict[str, CostModel] = {}
# Methods that choose K per image: their cost model takes the K to cost, and ``ADAPTIVE[name](config, k)`` is the
# config under which the method keeps exactly k tokens whatever its weights (to time it at a given K).
ADAPTIVE: dict[str, FixK] = {}


def cost_model(*names: str, fix_k: FixK | None = None) -> Callable[[CostModel], CostModel]:
    """Registers a cost model ``fn(method, geometry, k) -> MethodCost`` for the named methods. An adaptive method
    gives ``fix_k`` (see :data:`ADAPTIVE`); its cost model costs the ``k`` it is given, the others ignore it."""

    def register(fn: CostModel) -> CostModel:
        for name in names:
            COST_MODELS[name] = fn
            if fix_k is not None:
                ADAPTIVE[name] = fix_k
        return fn

    return register


def method_cost(method: PruningMethod, geometry: Geometry, k: int | None = None) -> MethodCost:
    """The cost description of ``method`` on ``geometry``.

    Args:
        k: for an adaptive method (:data:`ADAPTIVE`, e.g. StepPrune), the number of tokens it keeps.

    Raises:
        KeyError: the method has no cost model. ValueError: an adaptive method without ``k``, or a config whose
        count is data-dependent.
    """
    if method.name not in COST_MODELS:
        raise KeyError(f"no cost model for method {method.name!r}; known: {sorted(COST_MODELS)}")
    if method.name in ADAPTIVE and k is None:
        raise ValueError(f"{method.name} chooses its token count per image: give the k to cost")
    cost = COST_MODELS[method.name](method, geometry, k)
    if len(cost.per_layer) != geometry.depth:
        raise RuntimeError(f"cost model of {method.name} gave {len(cost.per_layer)} layers for {geometry.depth}")
    return cost
