"""HoloV (``holov``): spread the budget over P contiguous ranges of the token sequence in proportion to a
range score mixing attention and within-range similarity variance, then keep the most-attended tokens of each
range. Training-free.

Follows ``obananas/HoloV`` (snapshot 1d2e65e): ``llava/model/utils.py`` L22-151 (``HoloV``), its call site
``llava/model/llava_arch.py`` L239 and the attention source ``llava/model/multimodal_encoder/clip_encoder.py``
L35-46 / ``llava_arch.py`` L141-145; Qwen2.5-VL ``qwen-model-HoloV/utils.py`` L43-204 (+ ``adjust_ids``) and
``qwen-model-HoloV/modeling_qwen2_5_vl.py`` L555-615, L1905-1920. Algorithm (card §7), per image with N tokens
and budget K:

1. **Attention** a: LLaVA — CLIP layer 22's (``qk(-2)``) CLS row over the patches, averaged over heads.
   Qwen2.5-VL — attention *received* in the last vision block: mean over heads and pre-merger queries, mean
   over the token's 4 sub-patches.
2. **Ranges.** ``P = max(1, int((1024/576) N / K))`` (16 / 8 / 5 for K = 64 / 128 / 192 at N = 576) contiguous
   raster-order index ranges of ``N // P`` tokens, the first ``N % P`` one longer (empty ones dropped).
3. **Range score** on the **projected (LLM-space)** features: S = cosine matrix inside the range (features
   divided by ``norm + 1e-6``) with a zeroed diagonal; ``mu_i = sum_j S_ij / (n-1)``,
   ``v_i = sum_j (S_ij - mu_i)^2 / (n-1)`` (the zeroed diagonal included); ``a' = 1000 a``;
   ``t_i = a'_i + 0.09 v_i * mean|a'| / (mean|v| + 1e-6)``; score = mean t. A one-token range scores its raw a.
4. **Allocation** ``w = score / (sum + 1e-6)``, ``alloc = floor(w K)``, the leftover ``K - sum alloc`` handed
   out +1 to the ranges with the largest w. A range with ``alloc >= n`` is kept whole (raster order), else its
   top-``alloc`` tokens **by attention only** (attention-descending).
5. **Output** in range order; zero rows pad it to exactly K (truncation never triggers: sum alloc <= K).
   Positions: contiguous on LLaVA, each kept token's original M-RoPE id on Qwen2.5-VL (``adjust_ids``).

Vectorised over ranges (a padded (P, L) layout and one batched matmul), no loop over tokens or ranges.

Decisions where the card marks a detail as unverified or the code leaves it open:

* P for budgets other than 64 on LLaVA is [unverified] (the LLaVA code only shows P=16 at K=64); we use the
  Qwen code's rule for both backbones, as the card recommends. ``ranges`` overrides it.
* Qwen2.5-VL attention: the official code has a branch bug (a 3-D attention tensor falls through to all-ones)
  and pools window-permuted scores without un-permuting them; we use the intended signal, attention received
  per merged token in raster order.
* Zero padding rows name the image's last visual token as source (the official Qwen code pads positions with
  -1, which indexes the last visual position); they count as visual tokens (count = K always).
* Arithmetic in fp32 (the official code runs in fp16); the 1e-6 terms and the one-token-range quirk are kept.

Keep-all: ``budget=N`` (or ``ratio=1``) gives P = 1 and the whole range in raster order, i.e. vanilla.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch
from torch import Tensor

from stepprune.backbones.types import VisualTokens
from stepprune.methods.base import MethodConfig, PruningMethod, SelectionContext, family_default
from stepprune.methods.registry import register
from stepprune.methods.token_rows import stack_rows
from stepprune.methods.vision_signals import cls_attention, received_attention

POSITIONS = {"llava": "contiguous", "qwen2_5_vl": "original"}
LAYER = {"llava": -2, "qwen2_5_vl": -1}
ATTN_SCALE = 1e3  # the official a' = 1000 a
EPS = 1e-6


def num_ranges(n: int, k: int) -> int:
    """HoloV's range count ``P = max(1, int((1024/576) * N / K))``."""
    return max(1, int(((1024 / 576) * n) / k))


def range_sizes(n: int, p: int) -> Tensor:
    """(P',) long sizes of the P contiguous ranges of ``n`` tokens (first ``n % p`` one longer; empty dropped)."""
    s, r = divmod(n, p)
    sizes = torch.tensor([s + 1] * r + [s] * (p - r), dtype=torch.long)
    return sizes[sizes > 0]


def _layout(sizes: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Padded layout of the ranges: token index (P, L), validity (P, L) and start (P,) of each range."""
    starts = sizes.cumsum(0) - sizes
    pos = torch.arange(int(sizes.max()), device=sizes.device)
    valid = pos[None] < sizes[:, None]
    return (starts[:, None] + pos[None]).clamp(max=n - 1), valid, starts


def range_scores(feats: Tensor, attn: Tensor, sizes: Tensor, beta: float = 0.09) -> Tensor:
    """HoloV's per-range score (attention + ``beta``-weighted, rescaled similarity variance).

    Args:
        feats: (N, D) projected features of one image.
        attn: (N,) attention scores.
        sizes: (P,) range sizes (sum N, all > 0).

    Returns:
        (P,) fp32 range scores.
    """
    n = attn.numel()
    idx, valid, _ = _layout(sizes, n)
    vf = valid.float()
    f = feats.float()[idx]
    f = f / (f.norm(dim=-1, keepdim=True) + EPS) * vf[..., None]
    L = idx.shape[1]
    sim = (f @ f.transpose(1, 2)) * (1 - torch.eye(L, device=f.device))  # (P, L, L), zero diagonal
    denom = (sizes - 1).clamp(min=1).float()[:, None]
    mean = sim.sum(dim=-1) / denom
    var = ((sim - mean[..., None]) ** 2 * vf[:, None, :]).sum(dim=-1) / denom  # over the range's j, diagonal too
    a = attn.float()[idx] * vf
    a_scaled = a * ATTN_SCALE
    n_tok = sizes.float()
    scale = (a_scaled.abs().sum(-1) / n_tok) / ((var.abs() * vf).sum(-1) / n_tok + EPS)
    tokens = a_scaled + beta * var * scale[:, None]
    scores = (tokens * vf).sum(-1) / n_tok
    # Official quirk: a one-token range scores its raw (unscaled) attention.
    return torch.where(sizes <= 1, a.sum(-1) / n_tok, scores)


def allocate(scores: Tensor, k: int) -> Tensor:
    """(P,) long tokens per range: ``floor(w K)`` with ``w = s / (sum s + 1e-6)``, leftover +1 to the largest w."""
    w = scores / (scores.sum() + EPS)
    alloc = torch.floor(w * k).long()
    left = k - int(alloc.sum())
    if left > 0:
        alloc[w.topk(min(left, w.numel())).indices] += 1
    return alloc


def select_in_ranges(attn: Tensor, sizes: Tensor, alloc: Tensor) -> Tensor:
    """Token indices in output order: range order; a whole range in raster order when ``alloc >= size``, else
    its top-``alloc`` tokens by attention (descending).

    Returns:
        (m,) long, m <= sum(alloc).
    """
    idx, valid, starts = _layout(sizes, attn.numel())
    a = attn.float()[idx].masked_fill(~valid, float("-inf"))
    by_attention = a.argsort(dim=1, descending=True, stable=True)
    full = alloc >= sizes
    pos = torch.arange(idx.shape[1], device=idx.device).expand_as(idx)
    local = torch.where(full[:, None], pos, by_attention)
    take = pos < torch.where(full, sizes, alloc.clamp(min=0))[:, None]
    return (starts[:, None] + local)[take]  # row-major: range by range


@dataclasses.dataclass
class HoloVConfig(MethodConfig):
    """Config of ``holov``.

    Attributes:
        budget: K tokens per image (LLaVA-1.5: 192 / 128 / 64); with no budget or ratio, K = N (keep-all).
        ratio: K as a fraction of each image's tokens (``max(1, int(ratio * N))``, the official ``int``).
        positions: None = contiguous on LLaVA, original M-RoPE ids on Qwen2.5-VL.
        ranges: P, overriding the ``max(1, int((1024/576) N / K))`` rule.
        beta: weight of the rescaled similarity variance (official 0.09).
        layer: vision layer of the attention. None = -2 on LLaVA (CLIP layer 22), -1 on Qwen (last block).
    """

    positions: Literal["original", "contiguous"] | None = None
    ranges: int | None = None
    beta: float = 0.09
    layer: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ranges is not None and (isinstance(self.ranges, bool) or int(self.ranges) != self.ranges
                                        or self.ranges < 1):
            raise ValueError(f"{type(self).__name__}: ranges must be an integer >= 1, got {self.ranges!r}")


@register
class HoloV(PruningMethod):
    """HoloV: budget spread over contiguous ranges by attention + similarity variance, top attention inside."""

    name = "holov"
    config_class = HoloVConfig
    hook_point = "pre_llm"
    uses_text = False
    default_positions: ClassVar = POSITIONS

    def select(self, ctx: SelectionContext) -> VisualTokens:
        cfg, vision, family = self.config, ctx.vision, ctx.adapter.family
        layer = family_default(cfg.layer, LAYER, family, "holov: layer")
        if family == "llava":
            attn = cls_attention(vision, layer).mean(dim=1)
        else:
            attn = received_attention(vision, layer, "mean")
        feats = ctx.projected()
        rows, sources = [], []
        for b, n in enumerate(vision.num_tokens.tolist()):
            k = cfg.keep_count(n, b)
            sizes = range_sizes(n, cfg.ranges or num_ranges(n, k)).to(feats.device)
            a = attn[b, :n]
            scores = range_scores(feats[b, :n], a, sizes, cfg.beta)
            idx = select_in_ranges(a, sizes, allocate(scores, k))[:k]
            pad = k - idx.numel()
            rows.append(torch.cat([feats[b, idx], feats.new_zeros(pad, feats.shape[-1])]))
            sources.append(torch.cat([idx, idx.new_full((pad,), n - 1)]))
        return stack_rows(rows, sources)
