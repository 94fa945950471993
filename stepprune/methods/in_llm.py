"""Shared pieces of the training-free methods that prune *inside* the language model (FastV, SparseVLM,
PyramidDrop, DART): their config base, their method base, the layer-index mapping onto LLMs of another depth, and
per-sample top-k keep masks.

**Positions.** These methods hand every visual token to the LLM (no pre-LLM selection), so the prompt is spliced
with the backbone's own position ids (``"original"``; for LLaVA that is also contiguous). The config's
``positions`` field then chooses what the drop hooks do: ``"original"`` keeps each kept token's position id
(gaps; FastV, DART, SparseVLM), ``"contiguous"`` re-indexes the shortened sequence from the drop on
(PyramidDrop). On Qwen2.5-VL the runner's contiguous mode gives every slot one 1-D position on all three M-RoPE
axes (see :func:`stepprune.backbones.llm.apply_edit`).

**Layer mapping** (the published layer indices refer to LLaVA-1.5-7B's 32-layer Vicuna; the tiny test backbones
have 4 layers). ``layer_mapping`` picks the rule:

* ``"strict"`` — use the indices as given; an index outside the model is a ``ValueError`` naming the method, the
  field, the indices and the valid range.
* ``"proportional"`` — ``l -> floor(l * depth / reference_depth + 0.5)``, clamped to the method's valid range.
  Stages that land on the same layer merge: the deepest of them applies there (its kept count is what that
  layer and the next ones see), so a shallow model keeps the reference schedule's *later* budgets.
* ``"fit"`` (default) — ``"strict"`` when every index fits the model, else ``"proportional"``. The real
  backbones (LLaVA-1.5-7B: 32 layers, Qwen2.5-VL-7B: 28) run every published setting unchanged; on the 4-layer
  tiny backbones e.g. SparseVLM's pruning layers (2, 6, 15) become (0, 1, 2) and PyramidDrop's (2, 8, 16, 24)
  become (1, 1, 2, 3) -> stages at layers 1, 2, 3 with the ratios of the last three reference stages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from stepprune.backbones.types import SUFFIX, VISUAL
from stepprune.methods.base import MethodConfig, PruningMethod, SelectionContext

LayerMapping = Literal["fit", "strict", "proportional"]

# The depth the published layer indices refer to: Vicuna-7B inside LLaVA-1.5-7B.
REFERENCE_DEPTH = 32


@dataclasses.dataclass
class InLLMConfig(MethodConfig):
    """Fields every in-LLM method shares (on top of budget / ratio / positions).

    Attributes:
        layer_mapping: how layer indices meet an LLM of another depth (see the module docstring).
        reference_depth: the depth the configured layer indices refer to (32: LLaVA-1.5-7B).
    """

    layer_mapping: LayerMapping = "fit"
    reference_depth: int = REFERENCE_DEPTH

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer_mapping not in ("fit", "strict", "proportional"):
            raise ValueError(f"{type(self).__name__}: layer_mapping must be 'fit', 'strict' or 'proportional', "
                             f"got {self.layer_mapping!r}")
        if isinstance(self.reference_depth, bool) or int(self.reference_depth) != self.reference_depth \
                or self.reference_depth < 1:
            raise ValueError(f"{type(self).__name__}: reference_depth must be an integer >= 1, "
                             f"got {self.reference_depth!r}")


def check_layer_list(owner: str, field: str, layers: Sequence[int], lowest: int) -> tuple[int, ...]:
    """Validates a configured layer list: integers >= ``lowest``, strictly increasing. Returns it as a tuple."""
    out = tuple(layers)
    if not out:
        raise ValueError(f"{owner}: {field} must name at least one layer")
    for x in out:
        if isinstance(x, bool) or not isinstance(x, int) or x < lowest:
            raise ValueError(f"{owner}: {field} must hold integers >= {lowest}, got {list(out)}")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{owner}: {field} must be strictly increasing, got {list(out)}")
    return out


def layers_fit(layers: Sequence[int], lowest: int, highest: int) -> bool:
    """Whether every index lies in [lowest, highest]."""
    return all(lowest <= x <= highest for x in layers)


def map_layers(
    layers: Sequence[int],
    depth: int,
    *,
    lowest: int,
    highest: int,
    mode: LayerMapping,
    reference_depth: int,
    owner: str,
    field: str,
) -> list[int]:
    """Maps configured layer indices onto an LLM with ``depth`` layers (non-decreasing; may repeat).

    Args:
        layers: the configured, strictly increasing indices (on a ``reference_depth``-layer LLM).
        depth: layers of the LLM actually run.
        lowest / highest: the method's valid range for these indices on that LLM.
        mode: ``"fit"``, ``"strict"`` or ``"proportional"`` (module docstring).
        owner / field: named in errors.

    Raises:
        ValueError: an index does not fit under ``"strict"``, or the model is too shallow for the method.
    """
    if highest < lowest:
        raise ValueError(f"{owner}: a {depth}-layer LLM is too shallow for this method "
                         f"({field} must lie in [{lowest}, {highest}])")
    fits = layers_fit(layers, lowest, highest)
    if mode == "strict" or (mode == "fit" and fits):
        if not fits:
            raise ValueError(f"{owner}: {field}={list(layers)} do not fit a {depth}-layer LLM (valid: "
                             f"{lowest}..{highest}); give {field} for this depth or set "
                             f"layer_mapping='proportional'")
        return list(layers)
    scaled = [math.floor(x * depth / reference_depth + 0.5) for x in layers]
    return [min(max(x, lowest), highest) for x in scaled]


def merge_stages(mapped: Sequence[int]) -> dict[int, int]:
    """``{layer: stage}`` for mapped stage layers; stages that share a layer keep the deepest (last) one."""
    out: dict[int, int] = {}
    for stage, layer in enumerate(mapped):
        out[layer] = stage
    return out


def topk_keep(scores: Tensor, candidates: Tensor, k: Sequence[int]) -> Tensor:
    """Per-sample top-k keep mask over candidate slots.

    Args:
        scores: (B, L) float scores (any value outside ``candidates`` is ignored).
        candidates: (B, L) bool, the slots that compete (e.g. the current visual slots).
        k: per sample, how many to keep (all candidates when k >= their number).

    Returns:
        (B, L) bool, True for kept candidates (slot order untouched, so kept tokens stay in spatial order).
    """
    keep = torch.zeros_like(candidates)
    for b, kb in enumerate(k):
        slots = candidates[b].nonzero().flatten()
        kb = min(int(kb), slots.numel())
        if kb <= 0:
            continue
        # torch.topk, as every official implementation, picks the winners; slot order is restored by the mask.
        top = scores[b, slots].topk(kb).indices
        keep[b, slots[top]] = True
    return keep


def visual_slots(state) -> Tensor:
    """(B, L) bool, the real visual slots of a runner state."""
    return (state.segment == VISUAL) & state.valid


def suffix_slots(state) -> Tensor:
    """(B, L) bool, the real text slots after the image (question + template, e.g. ``ASSISTANT:``)."""
    return (state.segment == SUFFIX) & state.valid


def last_slot(state) -> Tensor:
    """(B, 1) long: the last prompt token's slot. Sequences are left-padded, so it is slot L-1 for every sample."""
    B, L = state.valid.shape
    return torch.full((B, 1), L - 1, dtype=torch.long, device=state.valid.device)


class InLLMMethod(PruningMethod):
    """Base of the in-LLM methods: every visual token enters the LLM; drop hooks act inside it.

    Subclasses implement :meth:`llm_hooks`. A config with neither budget nor ratio (nor a method-specific
    schedule) means keep everything: no hook at all.
    """

    hook_point: ClassVar[str] = "in_llm"
    training_free: ClassVar[bool] = True
    config_class: ClassVar[type[MethodConfig]] = InLLMConfig

    def position_mode_for(self, family: str) -> str:
        # Nothing is pruned before the LLM: splice the full prompt with the backbone's own position ids. The
        # configured convention applies inside the LLM, to the drop hooks (see hook_positions).
        return "original"

    @property
    def hook_positions(self) -> str:
        """The :class:`~stepprune.backbones.hooks.PrefillDrop` position mode for ``config.positions``."""
        return "keep" if self.config.positions == "original" else "contiguous"

    def map_layers(self, ctx: SelectionContext, layers: Sequence[int], *, lowest: int, highest_from_end: int,
                   field: str) -> list[int]:
        """:func:`map_layers` onto this batch's LLM; the valid range is [lowest, depth - highest_from_end]."""
        depth = ctx.adapter.num_layers
        return map_layers(layers, depth, lowest=lowest, highest=depth - highest_from_end,
                          mode=self.config.layer_mapping, reference_depth=self.config.reference_depth,
                          owner=self.name, field=field)

    @staticmethod
    def num_tokens(ctx: SelectionContext) -> list[int]:
        """Visual tokens of each sample's image (N_b) before any pruning."""
        return [int(n) for n in ctx.vision.num_tokens.tolist()]
