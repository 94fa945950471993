"""Extension points for methods that act inside the language model.

* :class:`PrefillDrop` removes visual tokens from the hidden states *entering* a decoder layer during prefill
  (FastV, SparseVLM, PyramidDrop, DART). Layers before it see the full sequence; it and later layers see the
  kept subset, and their KV caches hold only the kept tokens.
* :class:`DecodeEvict` removes visual entries from the KV caches of a decoder layer and all later layers during
  generation (decode-time methods such as DyRate-style pruning).
* :class:`AttentionBias` adds a per-(query slot, key slot) bias to the attention logits of a decoder layer and all
  later layers during prefill. It is the teacher-forced counterpart of decode-time eviction: answer position t can
  be kept from attending to the visual tokens evicted before step t (hard: a -inf-like bias), or be attenuated
  softly (log-weights) so that training gradients reach whatever chose the eviction.
  StepPrune's attention gate (``gate="attention"``) uses it from layer 0 with log g on the visual key columns, a
  soft form of pre-LLM selection.

All three receive a context with the state at that boundary and can ask for one earlier layer's attention rows or keys,
recomputed from that layer's recorded input with the layer's own projections, so the model keeps SDPA everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from torch import Tensor

if TYPE_CHECKING:
    from stepprune.backbones.llm import DecodeContext, PrefillContext


@dataclasses.dataclass
class LayerEdit:
    """What a prefill hook returns.

    Attributes:
        keep: (B, L) bool over the current slots. Only VISUAL slots can be dropped; text slots are always kept.
        extra_hidden: (B, m, D) new visual tokens to insert right after the last kept visual token, or None.
        extra_positions: (B, m) or (3, B, m) their position ids (used when positions are kept).
        extra_valid: (B, m) bool, which extra rows are real.
        extra_index: (B, m) long, the original visual index each extra token stands for (for reporting).
    """

    keep: Tensor
    extra_hidden: Tensor | None = None
    extra_positions: Tensor | None = None
    extra_valid: Tensor | None = None
    extra_index: Tensor | None = None


@dataclasses.dataclass
class PrefillDrop:
    """Drops visual tokens from the hidden states entering decoder layer ``layer`` (0-based) during prefill.

    Attributes:
        layer: the first layer that sees only the kept tokens (FastV's K).
        select: ``select(ctx) -> LayerEdit | Tensor`` (a bare (B, L) bool tensor means ``LayerEdit(keep=...)``).
        record_inputs: earlier layers whose input hidden states ``select`` needs (for attention rows / keys).
        positions: ``"keep"`` keeps each token's position id (gaps); ``"contiguous"`` re-indexes 0..L'-1 from
            this layer on, and generation continues from L' in these layers (PyramidDrop's convention).
    """

    layer: int
    select: Callable[[PrefillContext], LayerEdit | Tensor]
    record_inputs: tuple[int, ...] = ()
    positions: Literal["keep", "contiguous"] = "keep"


@dataclasses.dataclass
class DecodeEvict:
    """Evicts visual KV entries of decoder layers >= ``layer`` before each generation step runs them.

    Attributes:
        layer: the first layer whose cache is pruned.
        select: ``select(ctx) -> (B, Lc) bool`` keep mask over that layer group's cached slots, or None to keep all.
        record_inputs: layers whose input (for the new token) ``select`` needs, e.g. ``(layer - 1,)``.
    """

    layer: int
    select: Callable[[DecodeContext], Tensor | None]
    record_inputs: tuple[int, ...] = ()


@dataclasses.dataclass
class AttentionBias:
    """Adds ``bias(ctx)`` to every head's attention logits in decoder layers >= ``layer`` during prefill.

    The bias is added on top of the causal and padding mask (which it cannot undo) and may be differentiable: a
    value ``log(w)`` scales key j's unnormalised attention weight for query i by w, and ``torch.finfo(dtype).min``
    hides key j from query i exactly (what decode-time eviction does for the rows after the eviction). Every query
    row must keep at least one finite entry (its own slot is the natural one). Prefill only: generation never
    applies it, so use it for teacher-forced passes, not with a KV cache that decoding continues from.

    Attributes:
        layer: the first layer whose attention gets the bias (layers before it run unbiased); 0 biases every layer
            (then ``record_inputs`` must be empty).
        bias: ``bias(ctx) -> (B, L, L)`` float over the slots of the state entering ``layer`` (query rows, key
            columns), or ``(B, L)`` over key columns alone when ``per_key``. Hooks at the same layer add up.
        record_inputs: earlier layers whose input hidden states ``bias`` needs (for attention rows / keys).
        per_key: the bias is one value per key, the same for every query row (a keep gate's log weight). Such a
            bias rides in the keys to SDPA's flash kernel (:mod:`stepprune.backbones.key_bias_attention`) instead
            of a float mask, which sends a differentiable bias to the math kernel: about 2x faster per layer on
            CPU (``jobs/bench_gate_attention.py``), the same function up to float rounding.
    """

    layer: int
    bias: Callable[[PrefillContext], Tensor]
    record_inputs: tuple[int, ...] = ()
    per_key: bool = False
