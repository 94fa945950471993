"""PyramidDrop / PDrop (CVPR'25), training-free inference mode, inside the LLM, in several stages.

Algorithm (design card §5): the forward pass is cut into stages at boundary layers l_1 < l_2 < ...; stage s keeps
``int(N * ratio_s)`` of the image's N tokens, with ``ratio_s = lam ** s`` by default. At each boundary l_s:

1. take the hidden states about to enter layer l_s and apply **that layer's own** input norm, q/k projections
   and RoPE at the current positions (PDrop ranks with the *next* layer, unlike FastV's previous-layer map);
2. query = the last instruction token (the last prompt slot, L-1); ``softmax(q K^T / sqrt(d) + causal)`` in fp32,
   mean over heads, restricted to the current image tokens;
3. keep the top ``int(N * ratio_s)`` (relative to the *original* N), in spatial order, and **re-index positions
   contiguously** (``arange`` over the shortened sequence); decoding continues from the shortened length in those
   layers (the official decode-time shift by ``kept_before - kept_after`` per boundary).

Official code followed: ``Cooperx521/PyramidDrop`` (snapshot 6444f30), ``llava/model/modeling_llama_pdrop.py``
(``pdrop_forward``: rank when ``layer_idx + 1 in layer_list``; ``pdrop_rank_drop``: next layer's
``input_layernorm``/``q_proj``/``k_proj``/RoPE, query ``prompt_len + n_img - 1``, ``keep_length =
int(576 * ratio[stage + 1])``, sorted top-k, ``position_ids = arange``), ``llava/eval/model_vqa_loader.py``
(``image_token_ratio_list.insert(0, 1.0)``), README (``layer_list=[8,16,24]``, ratios ``[0.5, 0.25, 0.125]``).

Settings and choices:

* ``lam`` given: ratios ``lam, lam^2, ...`` at ``layers`` (default the official ``(8, 16, 24)``); ``ratios`` gives
  the official ``image_token_ratio_list`` directly instead.
* ``budget`` / ``ratio`` given (the card's average-token-matched setting: lam values from an unattributed port,
  **its layer list unverified**, (2, 8, 16, 24) verified by arithmetic): boundaries default to ``(2, 8, 16, 24)``
  with ratios ``lam .. lam^4``, and lam is solved so that the mean number of image tokens over the LLM's layers
  equals the budget (continuous counts), **rounded to 3 decimals** — the precision of the port's constants, which
  this rule reproduces exactly for 192/128/64 on 32 layers (0.581 / 0.437 / 0.196; 64 gives 112/22/4/0 tokens:
  the last stage keeps none, as ``int()`` does in the official code). It is solved on the model actually run when
  the layers fit it (28 layers for Qwen2.5-VL-7B give another lam), else on ``reference_depth`` before mapping
  (the tiny backbones). A budget that cannot be matched (the full layers before the first boundary already
  exceed it) is a clear error.
* No budget, ratio, lam or ratios: keep everything (no hook).
* Several stages mapped onto one layer (shallow models) merge; see :mod:`stepprune.methods.in_llm`.
* Inference mode only (the paper's training-time query set — every token before an answer span — is not used).
* **Qwen2.5-VL** (no official port): contiguous re-indexing gives all three M-RoPE axes the same 1-D position
  from the first boundary on, so even ``lam=1`` differs from the unpruned model there; ``positions="original"``
  keeps the M-RoPE ids instead (the convention of the VisionSelector/HoloV Qwen ports).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from stepprune.backbones.hooks import PrefillDrop
from stepprune.backbones.llm import PrefillContext
from stepprune.methods.base import SelectionContext
from stepprune.methods.in_llm import (
    InLLMConfig,
    InLLMMethod,
    check_layer_list,
    last_slot,
    layers_fit,
    merge_stages,
    topk_keep,
    visual_slots,
)
from stepprune.methods.registry import register

DEFAULT_LAYERS = (8, 16, 24)  # official README (lam = 0.5)
BUDGET_LAYERS = (2, 8, 16, 24)  # the card's average-token-matched setting for 192 / 128 / 64
DEFAULT_LAM = 0.5


def average_fraction(lam: float, boundaries: Sequence[int], depth: int) -> float:
    """Mean over ``depth`` layers of the kept fraction ``lam ** (number of boundaries <= layer)``."""
    return sum(lam ** sum(b <= layer for b in boundaries) for layer in range(depth)) / depth


def solve_lambda(fraction: float, boundaries: Sequence[int], depth: int) -> float:
    """The lam in [0, 1] whose geometric stage ratios keep ``fraction`` of the image tokens on average over
    ``depth`` layers (bisection on a monotone function), rounded to 3 decimals.

    Raises:
        ValueError: the layers before the first boundary alone keep more than ``fraction`` on average.
    """
    if fraction >= 1.0:
        return 1.0
    floor = average_fraction(0.0, boundaries, depth)
    if floor > fraction:
        raise ValueError(f"pdrop: an average of {fraction:.4f} of the image tokens cannot be matched with "
                         f"boundaries {list(boundaries)} on {depth} layers (the first {boundaries[0]} full layers "
                         f"alone average {floor:.4f}); give lam or ratios instead")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if average_fraction(mid, boundaries, depth) < fraction:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 3)


@dataclasses.dataclass
class PDropConfig(InLLMConfig):
    """Config of ``pdrop``.

    Attributes:
        positions: ``"contiguous"`` (official) or ``"original"``.
        layers: stage boundaries (0-based; layer l_s is the first to see stage s's tokens and the one whose
            projections rank them). None: ``(8, 16, 24)``, or ``(2, 8, 16, 24)`` when a budget/ratio sets lam.
        lam: the geometric factor lambda (stage s keeps ``int(N * lam ** s)``).
        ratios: explicit kept fractions per stage (the official ``image_token_ratio_list``), instead of lam.
    """

    positions: Literal["original", "contiguous"] = "contiguous"
    layers: tuple[int, ...] | None = None
    lam: float | None = None
    ratios: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [n for n in ("lam", "ratios") if getattr(self, n) is not None]
        if self.budget is not None or self.ratio is not None:
            given.append("budget/ratio")
        if len(given) > 1:
            raise ValueError(f"PDropConfig: give one of budget/ratio, lam or ratios, not {given}")
        if self.layers is not None:
            self.layers = check_layer_list("PDropConfig", "layers", self.layers, lowest=1)
        if self.lam is not None and not 0.0 < float(self.lam) <= 1.0:
            raise ValueError(f"PDropConfig: lam must be in (0, 1], got {self.lam!r}")
        if self.ratios is not None:
            self.ratios = tuple(float(r) for r in self.ratios)
            if not all(0.0 <= r <= 1.0 for r in self.ratios) or any(b > a for a, b in zip(self.ratios,
                                                                                        self.ratios[1:])):
                raise ValueError(f"PDropConfig: ratios must be non-increasing fractions in [0, 1], "
                                 f"got {list(self.ratios)}")
            bounds = self.layers or DEFAULT_LAYERS
            if len(self.ratios) != len(bounds):
                raise ValueError(f"PDropConfig: {len(self.ratios)} ratios for {len(bounds)} stage boundaries "
                                 f"{list(bounds)}")

    @property
    def boundaries(self) -> tuple[int, ...]:
        """The configured stage boundaries (before any mapping onto a shallower LLM)."""
        if self.layers is not None:
            return self.layers
        return BUDGET_LAYERS if (self.budget is not None or self.ratio is not None) else DEFAULT_LAYERS


@register
class PyramidDrop(InLLMMethod):
    """PyramidDrop: rank image tokens with the next layer's last-instruction-token attention, stage by stage."""

    name = "pdrop"
    config_class = PDropConfig
    uses_text = True  # the query is the last instruction token

    def stage_ratios(self, ctx: SelectionContext) -> list[list[float]]:
        """Per sample, the kept fraction of each configured stage (relative to the original N)."""
        cfg = self.config
        bounds = cfg.boundaries
        if cfg.ratios is not None:
            return [list(cfg.ratios)] * ctx.batch_size
        if cfg.lam is not None:
            lams = [float(cfg.lam)] * ctx.batch_size
        else:
            depth = ctx.adapter.num_layers
            # Solve on the model run when the boundaries fit it, else on the reference depth they were set for.
            solve_depth = depth if layers_fit(bounds, 1, depth - 1) else cfg.reference_depth
            lams = []
            for b, n in enumerate(self.num_tokens(ctx)):
                frac = cfg.ratio if cfg.ratio is not None else cfg.keep_count(n, b) / n
                lams.append(solve_lambda(frac, bounds, solve_depth))
        return [[lam ** (s + 1) for s in range(len(bounds))] for lam in lams]

    def llm_hooks(self, ctx: SelectionContext) -> list[PrefillDrop]:
        cfg = self.config
        if cfg.budget is None and cfg.ratio is None and cfg.lam is None and cfg.ratios is None:
            return []
        mapped = self.map_layers(ctx, cfg.boundaries, lowest=1, highest_from_end=1, field="layers")
        ratios = self.stage_ratios(ctx)
        n_img = self.num_tokens(ctx)
        hooks = []
        for layer, stage in merge_stages(mapped).items():
            # Official: keep_length = int(image_tokens * ratio) with the original image-token count.
            keep = [int(n * r[stage]) for n, r in zip(n_img, ratios)]

            def select(pctx: PrefillContext, keep=keep):
                st = pctx.state
                rows = pctx.current_attention_rows(last_slot(st))  # (B, H, 1, L) with this layer's projections
                scores = rows.mean(dim=1)[:, 0]
                return topk_keep(scores, visual_slots(st), keep)

            hooks.append(PrefillDrop(layer, select, positions=self.hook_positions))
        return hooks
