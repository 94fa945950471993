"""References computed by the unmodified HF models, and a cache-free greedy decoder, for parity tests."""

from __future__ import annotations

import dataclasses

import torch

from stepprune.backbones.llm import GENERATED
from stepprune.backbones.types import LMInputs


def sample_pixels(adapter, prompt, b: int) -> dict:
    """The processor's pixel inputs of sample ``b`` alone (Qwen packs all images' patches in one tensor)."""
    px = prompt.pixel_inputs
    if "image_grid_thw" not in px:
        return {"pixel_values": px["pixel_values"][b: b + 1]}
    grid = px["image_grid_thw"]
    n = grid.prod(-1)
    off = torch.cat([n.new_zeros(1), n.cumsum(0)])
    return {"pixel_values": px["pixel_values"][off[b]: off[b + 1]], "image_grid_thw": grid[b: b + 1]}


@torch.no_grad()
def hf_logits(adapter, prompt, b: int) -> torch.Tensor:
    """(L_b, V) logits of sample ``b`` from the unmodified HF model, run alone and unpadded."""
    keep = prompt.attention_mask[b].bool()
    kw = dict(input_ids=prompt.input_ids[b: b + 1, keep], **sample_pixels(adapter, prompt, b))
    if "mm_token_type_ids" in prompt.extra:
        kw["mm_token_type_ids"] = prompt.extra["mm_token_type_ids"][b: b + 1, keep]
        adapter.model.model.rope_deltas = None  # stateful in HF; reset between unrelated calls
    return adapter.model(**kw).logits[0]


@torch.no_grad()
def hf_generate(adapter, prompt, max_new_tokens: int) -> torch.Tensor:
    """(B, T) greedy tokens of the unmodified HF ``generate`` on the padded batch."""
    kw = dict(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask, **prompt.pixel_inputs,
              **prompt.extra)
    if "mm_token_type_ids" in prompt.extra:
        adapter.model.model.rope_deltas = None
    out = adapter.model.generate(**kw, max_new_tokens=max_new_tokens, do_sample=False)
    return out[:, prompt.input_ids.shape[1]:]


def _append(inputs: LMInputs, emb: torch.Tensor, step: int) -> LMInputs:
    """Appends one generated token per sample, at position ``next_position + step``."""
    B = emb.shape[0]
    pos = (inputs.next_position + step)[:, None]
    positions = torch.cat([inputs.positions, pos[None].expand(3, -1, -1) if inputs.positions.dim() == 3 else pos],
                          dim=-1)
    return dataclasses.replace(
        inputs,
        embeds=torch.cat([inputs.embeds, emb[:, None]], dim=1),
        valid=torch.cat([inputs.valid, torch.ones(B, 1, dtype=torch.bool)], dim=1),
        positions=positions,
        segment=torch.cat([inputs.segment, torch.full((B, 1), GENERATED, dtype=torch.int8)], dim=1),
        visual_index=torch.cat([inputs.visual_index, torch.full((B, 1), -1)], dim=1),
        labels=None,
    )


@torch.no_grad()
def cache_free_greedy(adapter, inputs: LMInputs, max_new_tokens: int, drops=()) -> torch.Tensor:
    """Greedy decoding that recomputes the whole prefill at every step (no KV cache), as the ground truth for
    the cached decoder's positions and masks. Ignores EOS (compare the first tokens only)."""
    seq = inputs
    out = []
    for step in range(max_new_tokens):
        res = adapter.runner.prefill(seq, drops)
        nxt = adapter.runner.logits(res.hidden[:, -1]).argmax(-1)
        out.append(nxt)
        seq = _append(seq, adapter.embed_text(nxt[:, None])[:, 0], step)
    return torch.stack(out, dim=1)
