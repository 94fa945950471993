"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): windowed ViT, 2x2 patch merger, Qwen2 LLM with M-RoPE.

Selection happens at merged-token granularity (one LLM visual token per 2x2 patch group). A visual token's
pre-projector features are its 4 pre-merger patch features, concatenated in merge order (d_tok = 4 * d_vision);
:meth:`project` applies the frozen merger to them, so ``project(tokens)`` equals the model's own image features.
The vision tower runs its blocks in a window-permuted order; everything here is un-permuted to raster order.
Images of different sizes give different N per sample; features are padded to the batch maximum.
Vision attention for :meth:`VisionFeatures.qk` is recomputed only for full-attention blocks (per image).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.types import PromptBatch, VisionFeatures


def _pad_stack(rows: list[Tensor]) -> Tensor:
    """Stacks tensors (n_i, ...) into (B, max n_i, ...) with zero padding."""
    n = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros((len(rows), n, *rows[0].shape[1:]))
    for b, r in enumerate(rows):
        out[b, : r.shape[0]] = r
    return out


class Qwen25VLAdapter(BackboneAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration``."""

    family = "qwen2_5_vl"

    @property
    def visual(self) -> nn.Module:
        return self.model.model.visual

    @property
    def visual_token_group(self) -> int:
        return self.visual.spatial_merge_unit

    @property
    def visual_token_dim(self) -> int:
        # The 4 pre-merger patch features of a merged token, concatenated (what the merger's MLP takes).
        return self.visual.config.hidden_size * self.visual_token_group

    def _positions(self, input_ids, attention_mask, extra, pixel_inputs) -> Tensor:
        # 3-D M-RoPE ids of the unpruned sequence, exactly as the model computes them for generation.
        pos, _ = self.model.model.get_rope_index(
            input_ids.to(self.device),
            mm_token_type_ids=extra["mm_token_type_ids"].to(self.device),
            image_grid_thw=pixel_inputs["image_grid_thw"].to(self.device),
            attention_mask=attention_mask.to(self.device),
        )
        return pos

    @torch.no_grad()
    def vision_features(self, prompt: PromptBatch) -> VisionFeatures:
        vis = self.visual
        grid = prompt.pixel_inputs["image_grid_thw"].to(self.device)
        pixels = prompt.pixel_inputs["pixel_values"].to(self.device, self.dtype)
        if grid.shape[0] != prompt.batch_size:
            raise ValueError(f"{grid.shape[0]} images for {prompt.batch_size} samples (one image per sample)")
        out = vis(pixels, grid_thw=grid, output_hidden_states=True, return_dict=True)
        unit = vis.spatial_merge_unit
        window_index, _ = get_vision_window_index(grid, vis.spatial_merge_size, vis.window_size, vis.patch_size)
        reverse = torch.argsort(window_index.to(self.device))
        counts = (grid.prod(-1) // unit).tolist()

        def per_image(x: Tensor) -> list[Tensor]:
            """Window-permuted patch rows (S, ...) -> per-image raster-order merged groups [(n_b, unit, ...)]."""
            units = x.reshape(x.shape[0] // unit, unit, *x.shape[1:])[reverse]
            return list(torch.split(units, counts))

        d = out.last_hidden_state.shape[-1]
        tokens = _pad_stack([u.reshape(u.shape[0], unit * d) for u in per_image(out.last_hidden_state)])
        hidden = out.hidden_states  # hidden[i] is the input of block i (window-permuted order)

        def qk(layer: int):
            i = layer % len(vis.blocks)
            if i not in vis.fullatt_block_indexes:
                raise ValueError(f"vision block {i} uses windowed attention; qk() supports full-attention blocks "
                                 f"{list(vis.fullatt_block_indexes)}")
            blk = vis.blocks[i]
            h = hidden[i]
            S = h.shape[0]
            heads = blk.attn.num_heads
            x = blk.norm1(h)
            qkv = blk.attn.qkv(x).reshape(S, 3, heads, -1).permute(1, 0, 2, 3)
            pos_ids = get_vision_position_ids(grid, vis.spatial_merge_size)
            pe = vis.rotary_pos_emb(h, pos_ids)
            pe = tuple(vis.permute_input_for_window_attn(f, window_index, seq_len=S) for f in pe)
            q, k = apply_rotary_pos_emb_vision(qkv[0], qkv[1], *pe)  # (S, H, d)
            qs = [u.reshape(-1, heads, u.shape[-1]).transpose(0, 1) for u in per_image(q)]  # (H, 4 n_b, d)
            ks = [u.reshape(-1, heads, u.shape[-1]).transpose(0, 1) for u in per_image(k)]
            qp = _pad_stack([t.transpose(0, 1) for t in qs]).transpose(1, 2)  # (B, H, T, d)
            kp = _pad_stack([t.transpose(0, 1) for t in ks]).transpose(1, 2)
            lengths = torch.tensor([t.shape[1] for t in qs], device=qp.device)
            valid = torch.arange(qp.shape[2], device=qp.device)[None] < lengths[:, None]
            return qp, kp, valid

        hw = grid[:, 1:] // vis.spatial_merge_size
        return VisionFeatures(
            tokens=tokens,
            num_tokens=torch.tensor(counts, device=tokens.device),
            grid=hw,
            cls=None,
            qk=qk,
            attn_scale=vis.blocks[0].attn.scaling,
        )

    def project(self, tokens: Tensor) -> Tensor:
        merger = self.visual.merger
        unit = self.visual.spatial_merge_unit
        shape = tokens.shape
        x = tokens.to(self.dtype).reshape(*shape[:-1], unit, shape[-1] // unit)
        return merger.mlp(merger.ln_q(x).reshape(shape))
