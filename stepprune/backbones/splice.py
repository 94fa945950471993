"""Splices a (pruned) set of visual tokens into each sample's prompt and pads the batch for the LLM.

Decisions, in one place:
* **One image per sample**, given as one contiguous run of image placeholder tokens.
* **Left padding.** Every sequence ends at the last slot, so batched greedy decoding appends in lock-step.
* **Position ids.** ``"original"`` keeps each token's position in the *unpruned* sequence, gaps included (the
  text after the image keeps its offset, and generation continues from the unpruned length; for Qwen2.5-VL the
  kept tokens keep their 3-D M-RoPE ids and generation continues from ``max + 1``, i.e. ``rope_deltas`` of the
  unpruned sequence). ``"contiguous"`` re-indexes the shortened sequence 0..L'-1 (all three M-RoPE axes equal,
  as for text) and generation continues from L'. Padding slots get position 0; they are masked everywhere.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from stepprune.backbones.types import PAD, PREFIX, SUFFIX, VISUAL, LMInputs, PromptBatch, VisualTokens

PositionMode = Literal["original", "contiguous"]


def image_span(ids: Tensor, image_token_id: int, expected: int, sample: int) -> tuple[int, int]:
    """Returns (start, end) of the single contiguous run of image tokens in one unpadded sequence.

    Raises:
        ValueError: naming the sample, if the run is missing, split, or not ``expected`` long.
    """
    where = (ids == image_token_id).nonzero().flatten()
    n = int(where.numel())
    if n == 0:
        raise ValueError(f"sample {sample}: the prompt holds no image token (id {image_token_id})")
    start, end = int(where[0]), int(where[-1]) + 1
    if end - start != n:
        raise ValueError(f"sample {sample}: the image tokens are not one contiguous run (one image per sample)")
    if n != expected:
        raise ValueError(
            f"sample {sample}: image-token count mismatch: the prompt holds {n} image tokens but the vision "
            f"tower produced {expected} features"
        )
    return start, end


def splice(
    prompt: PromptBatch,
    visual: VisualTokens,
    text_embeds: Tensor,
    num_tokens: Tensor,
    image_token_id: int,
    position_mode: PositionMode = "original",
) -> LMInputs:
    """Builds the LLM batch: per sample, ``[prefix text ; visual rows ; suffix text]``, left-padded.

    Args:
        prompt: the tokenised batch (unpruned).
        visual: the visual tokens to splice in, with their source indices and counts.
        text_embeds: (B, L0, D) the LLM's input embeddings of ``prompt.input_ids``.
        num_tokens: (B,) visual tokens the vision tower produced per sample (checked against the prompt).
        image_token_id: the placeholder id.
        position_mode: ``"original"`` or ``"contiguous"`` (see the module docstring).
    """
    if position_mode not in ("original", "contiguous"):
        raise ValueError(f"position_mode must be 'original' or 'contiguous', got {position_mode!r}")
    B = prompt.batch_size
    mrope = prompt.positions.dim() == 3
    dtype = text_embeds.dtype
    pieces = []
    for b in range(B):
        keep = prompt.attention_mask[b].bool()
        ids = prompt.input_ids[b][keep]
        pos = prompt.positions[:, b][:, keep] if mrope else prompt.positions[b][keep][None]
        start, end = image_span(ids, image_token_id, int(num_tokens[b]), b)
        k = int(visual.count[b])
        src = visual.source_index[b, :k]
        if position_mode == "original" and k and (int(src.min()) < 0 or int(src.max()) >= end - start):
            raise ValueError(f"sample {b}: visual source index outside [0, {end - start})")
        emb_text = text_embeds[b][keep]
        emb = torch.cat([emb_text[:start], visual.embeds[b, :k].to(dtype), emb_text[end:]])
        n_suffix = ids.numel() - end
        seg = torch.cat([
            torch.full((start,), PREFIX, dtype=torch.int8),
            torch.full((k,), VISUAL, dtype=torch.int8),
            torch.full((n_suffix,), SUFFIX, dtype=torch.int8),
        ]).to(ids.device)
        vidx = torch.cat([ids.new_full((start,), -1), src.to(ids.device), ids.new_full((n_suffix,), -1)])
        if position_mode == "original":
            p = torch.cat([pos[:, :start], pos[:, start + src], pos[:, end:]], dim=1)
            nxt = int(pos.max()) + 1
        else:
            p = torch.arange(emb.shape[0], device=ids.device)[None].expand(pos.shape[0], -1)
            nxt = emb.shape[0]
        lab = None
        if prompt.labels is not None:
            lb = prompt.labels[b][keep]
            lab = torch.cat([lb[:start], lb.new_full((k,), -100), lb[end:]])
        pieces.append((emb, p, nxt, seg, vidx, lab))

    L = max(p[0].shape[0] for p in pieces)
    D = text_embeds.shape[-1]
    dev = text_embeds.device
    embeds = torch.zeros(B, L, D, dtype=dtype, device=dev)
    valid = torch.zeros(B, L, dtype=torch.bool, device=dev)
    positions = torch.zeros(3 if mrope else 1, B, L, dtype=torch.long, device=dev)
    segment = torch.full((B, L), PAD, dtype=torch.int8, device=dev)
    vindex = torch.full((B, L), -1, dtype=torch.long, device=dev)
    labels = torch.full((B, L), -100, dtype=torch.long, device=dev) if prompt.labels is not None else None
    nxt_all = torch.zeros(B, dtype=torch.long, device=dev)
    for b, (emb, p, nxt, seg, vidx, lab) in enumerate(pieces):
        n = emb.shape[0]
        embeds[b, L - n:] = emb
        valid[b, L - n:] = True
        positions[:, b, L - n:] = p
        segment[b, L - n:] = seg
        vindex[b, L - n:] = vidx
        nxt_all[b] = nxt
        if labels is not None:
            labels[b, L - n:] = lab
    return LMInputs(
        embeds=embeds,
        valid=valid,
        positions=positions if mrope else positions[0],
        next_position=nxt_all,
        segment=segment,
        visual_index=vindex,
        labels=labels,
    )
