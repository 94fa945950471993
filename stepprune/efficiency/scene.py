"""Shape-level inputs on the meta device: one batch of one-image prompts for a meta backbone, so that every piece
of the pipeline can be run — and its FLOPs counted — without data.

A prompt is laid out as ``[prefix text | N visual tokens | suffix text]`` (:class:`PromptShape`); the defaults are
LLaVA-1.5's VQA prompt (a ~35-token system prompt, then question + answer format + ``ASSISTANT:``), 60 text
tokens in all as in the design's FLOP estimate (stepprune.md Sec. 9.3).

On meta, values do not exist: anything data-dependent (``.item()``, ``nonzero``, a per-sample Python loop over
counts) cannot run. :class:`MetaScene` therefore hands out *states at a given shape* — the LLM sequence with ``v``
visual tokens, a :class:`~stepprune.backbones.llm.PrefillContext` whose recorded layers hold ``v_l`` tokens — and
the cost models (:mod:`stepprune.efficiency.costs`) call the methods' own scoring code on them.

Vision: LLaVA runs the adapter's own ``vision_features``. The Qwen2.5-VL adapter indexes by its grid's values, so
here the tower runs with its window/position indices computed on the CPU and the per-token rows are
shape-equivalent placeholders; its ``qk(layer)`` applies the block's norm and QKV projection (the FLOP-carrying
part; the rotary embedding is elementwise).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.llm import PrefillContext, SeqState
from stepprune.backbones.types import PREFIX, SUFFIX, VISUAL, PromptBatch, VisionFeatures

META = torch.device("meta")


@dataclasses.dataclass(frozen=True)
class PromptShape:
    """Text around the image, in tokens.

    Attributes:
        prefix: before the image (system prompt, ``USER:``).
        suffix: after the image (question, answer-format hint, ``ASSISTANT:``).
        question: the instruction tokens inside the suffix (what text-conditioned selectors encode).
    """

    prefix: int = 35
    suffix: int = 25
    question: int = 20

    def __post_init__(self) -> None:
        if self.prefix < 0 or self.suffix < 1 or not 1 <= self.question <= self.suffix:
            raise ValueError(f"need prefix >= 0, suffix >= 1 and 1 <= question <= suffix, got {self}")

    @property
    def text(self) -> int:
        return self.prefix + self.suffix


class MetaScene:
    """One batch of B prompts shaped by ``shape`` for a meta-device adapter.

    Args:
        adapter: an adapter whose model lives on the meta device (:func:`stepprune.efficiency.backbones.
            build_adapter`).
        shape: the text layout. batch: B.
        image_size: input resolution (Qwen2.5-VL; LLaVA's is fixed by its CLIP config).
    """

    def __init__(self, adapter: BackboneAdapter, shape: PromptShape, batch: int = 1, image_size: int | None = None):
        if adapter.device.type != "meta":
            raise ValueError(f"MetaScene needs a meta-device adapter, got one on {adapter.device}")
        self.adapter, self.shape, self.batch = adapter, shape, batch
        self.family = adapter.family
        self.dtype = adapter.dtype
        cfg = adapter.model.config.vision_config
        if self.family == "llava":
            self.image_size = int(cfg.image_size)
            side = self.image_size // cfg.patch_size
            self.grid = (side, side)
        else:
            from stepprune.efficiency.backbones import default_image_size

            self.image_size = image_size or default_image_size(adapter.model.config)
            patch = self.image_size // cfg.patch_size
            self.grid = (patch // cfg.spatial_merge_size, patch // cfg.spatial_merge_size)
        self.num_tokens = self.grid[0] * self.grid[1]
        self._vision: VisionFeatures | None = None

    # ------------------------------------------------------------------------------------------------- vision
    def run_vision(self) -> VisionFeatures:
        """Runs the vision tower on a meta batch (count its FLOPs around this call) and keeps its features."""
        B = self.batch
        if self.family == "llava":
            pixels = torch.empty(B, 3, self.image_size, self.image_size, device=META)
            ids = torch.empty(B, 1, dtype=torch.long, device=META)
            prompt = PromptBatch(ids, ids, {"pixel_values": pixels}, ids, ids.bool())
            self._vision = self.adapter.vision_features(prompt)
        else:
            self._vision = self._qwen_vision()
        return self._vision

    def vision(self) -> VisionFeatures:
        """The batch's vision features (computed by :meth:`run_vision` on first use)."""
        return self._vision if self._vision is not None else self.run_vision()

    def _qwen_vision(self) -> VisionFeatures:
        from transformers.vision_utils import get_vision_position_ids

        vis = self.adapter.model.model.visual
        unit = vis.spatial_merge_unit
        merge = vis.spatial_merge_size
        B, N = self.batch, self.num_tokens
        grid = torch.tensor([[1, self.grid[0] * merge, self.grid[1] * merge]] * B)  # CPU: the tower indexes by it
        cfg = vis.config
        pixels = torch.empty(B * N * unit, cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2,
                             device=META, dtype=self.dtype)
        out = vis(pixels, grid_thw=grid, output_hidden_states=True, return_dict=True,
                  position_ids=get_vision_position_ids(grid, merge).to(META))
        hidden = out.hidden_states
        d = cfg.hidden_size

        def qk(layer: int):
            blk = vis.blocks[layer % len(vis.blocks)]
            heads = blk.attn.num_heads
            qkv = blk.attn.qkv(blk.norm1(hidden[layer % len(vis.blocks)]))  # (S, 3 d)
            q, k = (t.reshape(B, N * unit, heads, d // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1)[:2])
            return q, k, torch.ones(B, N * unit, dtype=torch.bool, device=META)

        return VisionFeatures(
            tokens=torch.empty(B, N, unit * d, device=META, dtype=self.dtype),
            num_tokens=torch.full((B,), N, device=META),
            grid=torch.tensor([list(self.grid)] * B, device=META),
            cls=None,
            qk=qk,
            attn_scale=vis.blocks[0].attn.scaling,
        )

    # -------------------------------------------------------------------------------------------------- text
    def question_embeds(self) -> tuple[Tensor, Tensor]:
        """(B, Lq, D) instruction-token embeddings (a lookup: no FLOPs) and their (B, Lq) mask."""
        ids = torch.empty(self.batch, self.shape.question, dtype=torch.long, device=META)
        return self.adapter.embed_text(ids), torch.ones(self.batch, self.shape.question, dtype=torch.bool,
                                                        device=META)

    def llm_rows(self, n: int) -> Tensor:
        """(B, n, D) placeholder LLM-space rows (e.g. projected visual tokens a method reads)."""
        return torch.empty(self.batch, n, self.adapter.hidden_size, device=META, dtype=self.dtype)

    # --------------------------------------------------------------------------------------------------- LLM
    def state(self, visual: int) -> SeqState:
        """The LLM sequence ``[prefix | visual | suffix]`` of the batch (positions of the right rank)."""
        B, P, S = self.batch, self.shape.prefix, self.shape.suffix
        L = P + visual + S
        seg = torch.tensor([PREFIX] * P + [VISUAL] * visual + [SUFFIX] * S, dtype=torch.int8)
        pos = torch.arange(L, device=META)[None].expand(B, -1)
        if self.family == "qwen2_5_vl":
            pos = pos[None].expand(3, -1, -1)
        return SeqState(
            hidden=torch.empty(B, L, self.adapter.hidden_size, device=META, dtype=self.dtype),
            valid=torch.ones(B, L, dtype=torch.bool, device=META),
            positions=pos,
            next_position=torch.full((B,), L, device=META),
            segment=seg.to(META)[None].expand(B, -1),
            visual_index=torch.full((B, L), -1, device=META),
            labels=None,
        )

    def prefill_context(self, layer: int, visual: int, recorded: dict[int, int] | None = None) -> PrefillContext:
        """What a drop hook at ``layer`` sees: the current state with ``visual`` tokens, and for each recorded
        layer ``l`` its input with ``recorded[l]`` visual tokens (hidden states, rotary embedding, state)."""
        runner = self.adapter.runner
        inputs = {}
        for rec_layer, count in (recorded or {}).items():
            st = self.state(count)
            inputs[rec_layer] = (st.hidden, runner._rotary(st.hidden, st.positions), st)
        return PrefillContext(runner, self.state(visual), inputs, layer)
