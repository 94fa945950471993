"""Index and row bookkeeping shared by the pre-LLM methods that assemble their own per-sample visual rows or
per-sample kept-index lists (controls, VisionSelector)."""

from __future__ import annotations

import torch
from torch import Tensor

from stepprune.backbones.types import VisualTokens


def complement(keep: Tensor, n: int) -> Tensor:
    """(n - k,) long: the indices in [0, n) not in ``keep`` (k distinct indices), ascending."""
    mask = torch.ones(n, dtype=torch.bool, device=keep.device)
    mask[keep] = False
    return mask.nonzero().flatten()


def pad_index_rows(rows: list[Tensor], fill: int = 0) -> tuple[Tensor, Tensor]:
    """Stacks per-sample 1-D index tensors into (B, K_max) with ``fill`` padding, plus their lengths (B,)."""
    k = max((r.numel() for r in rows), default=0)
    out = torch.full((len(rows), k), fill, dtype=torch.long, device=rows[0].device if rows else "cpu")
    for b, r in enumerate(rows):
        out[b, : r.numel()] = r
    return out, torch.tensor([r.numel() for r in rows], dtype=torch.long, device=out.device)


def stack_rows(embeds: list[Tensor], sources: list[Tensor]) -> VisualTokens:
    """Pads per-sample rows into one batch.

    Args:
        embeds: per sample, (k_b, D) rows in sequence order (all with the same D and dtype).
        sources: per sample, (k_b,) long original visual index each row stands for.

    Returns:
        VisualTokens with (B, max k_b, D) embeds (zero padding), (B, max k_b) source index (0 padding), counts.
    """
    k = max((e.shape[0] for e in embeds), default=0)
    ref = embeds[0]
    out = ref.new_zeros(len(embeds), k, ref.shape[-1])
    src = torch.zeros(len(embeds), k, dtype=torch.long, device=ref.device)
    for b, (e, s) in enumerate(zip(embeds, sources)):
        out[b, : e.shape[0]] = e
        src[b, : s.numel()] = s
    count = torch.tensor([e.shape[0] for e in embeds], dtype=torch.long, device=ref.device)
    return VisualTokens(out, src, count)
