"""Per-token signals the training-free pre-LLM baselines read off the frozen vision tower, one definition each.

* :func:`cls_attention` — LLaVA-1.5: the CLS query's post-softmax attention over the N patches, per head.
* :func:`received_attention` — Qwen2.5-VL (no CLS): the attention each LLM visual token *receives*, i.e. the
  attention of every pre-merger query onto the token's 4 sub-patches, reduced over heads and queries and pooled
  (mean) over the 4 sub-patches — what the VisionSelector Qwen ports of PruMerge+ / VisionZip and the official
  HoloV Qwen code use in place of the CLS row.
* :func:`token_keys` — one key vector per visual token: LLaVA drops the CLS row; Qwen averages the 4
  sub-patches' (post-RoPE) keys, as those ports do.

All scores are fp32. Shapes: B = batch, H = heads, N = visual tokens (padded to the batch maximum on Qwen),
T = vision sequence of :meth:`VisionFeatures.qk` (LLaVA: 1 + N; Qwen: 4 N).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from stepprune.backbones.types import VisionFeatures

# Pre-merger patches per LLM visual token on Qwen2.5-VL (2x2 spatial merge): qk() rows come in groups of 4.
QWEN_UNIT = 4


def cls_attention(vision: VisionFeatures, layer: int) -> Tensor:
    """LLaVA: the CLS row of one CLIP layer's multi-head attention, restricted to the patches.

    Only the CLS query row is computed (the same values as ``vision.attention(layer)[:, :, 0, 1:]``).

    Args:
        vision: LLaVA vision features (``qk`` rows: CLS first, then N patches).
        layer: CLIP encoder layer (negative counts from the end; -2 is the layer whose output LLaVA uses).

    Returns:
        (B, H, N) fp32 post-softmax attention of the CLS query onto each patch.
    """
    q, k, _ = vision.qk(layer)  # (B, H, T, d)
    logits = (q[:, :, :1].float() @ k.float().transpose(-1, -2)) * vision.attn_scale  # (B, H, 1, T)
    return logits.softmax(dim=-1)[:, :, 0, 1:]


def received_attention(vision: VisionFeatures, layer: int, over_queries: Literal["mean", "sum"] = "mean"
                       ) -> Tensor:
    """Qwen2.5-VL: attention received by each merged visual token in one full-attention vision block.

    Averaged over heads, reduced over the image's (valid) pre-merger queries by ``over_queries`` ("mean": HoloV
    and the PruMerge+ port; "sum": the VisionZip port — a positive per-image factor, so rankings agree), then
    averaged over the token's 4 sub-patch keys.

    Returns:
        (B, N) fp32; padding tokens get 0.
    """
    q, k, valid = vision.qk(layer)  # (B, H, T, d), valid (B, T)
    got = torch.zeros(valid.shape, dtype=torch.float, device=q.device)
    # One head at a time keeps the peak at one (B, T, T) map (T = 4N pre-merger patches can be thousands).
    for h in range(q.shape[1]):
        logits = (q[:, h].float() @ k[:, h].float().transpose(-1, -2)) * vision.attn_scale
        attn = logits.masked_fill(~valid[:, None, :], float("-inf")).softmax(dim=-1)
        # Padded query rows must not count (they would spread uniformly over the valid keys).
        got += (attn * valid[..., None]).sum(dim=1)
    got = got / q.shape[1]  # mean over heads; (B, T) received by each key, summed over the valid queries
    queries = valid.sum(dim=1)
    if over_queries == "mean":
        got = got / queries[:, None].clamp(min=1).float()
    elif over_queries != "sum":
        raise ValueError(f"over_queries must be 'mean' or 'sum', got {over_queries!r}")
    B, T = got.shape
    return got.view(B, T // QWEN_UNIT, QWEN_UNIT).mean(dim=-1)


def token_keys(vision: VisionFeatures, layer: int, heads: Literal["concat", "mean"], family: str) -> Tensor:
    """One key vector per visual token from one vision layer.

    Args:
        heads: ``"concat"`` keeps all heads side by side (the full-width key, PruMerge); ``"mean"`` averages
            them (VisionZip's head-averaged "metric").
        family: ``"llava"`` (drops the CLS row) or ``"qwen2_5_vl"`` (averages each token's 4 sub-patch keys).

    Returns:
        (B, N, H*d) or (B, N, d) in the layer's dtype.
    """
    _, k, _ = vision.qk(layer)  # (B, H, T, d)
    B, H, T, d = k.shape
    k = k.transpose(1, 2)  # (B, T, H, d)
    k = k.reshape(B, T, H * d) if heads == "concat" else k.mean(dim=2)
    if family == "llava":
        return k[:, 1:]
    if family == "qwen2_5_vl":
        return k.reshape(B, T // QWEN_UNIT, QWEN_UNIT, k.shape[-1]).mean(dim=2)
    raise ValueError(f"token_keys: unsupported backbone family {family!r}")
