"""LLaVA-PruMerge (``prumerge``): keep the CLS-attention outliers, merge their nearest neighbours into them, and add
one token summarising everything pruned. Training-free as implemented here (the paper's headline numbers use a
LoRA-finetuned LLaVA-1.5; running it on stock weights is what every comparison table calls "training-free").

Follows ``42Shawn/LLaVA-PruMerge`` (snapshot 097c041) ``llava/model/multimodal_encoder/clip_encoder.py``:
``outlier_dectection`` (L34-47) and ``token_prune_merge_advanced`` (L85-172); the fixed-budget mode and the
Qwen2.5-VL port follow ``JulietChoo/VisionSelector`` ``qwen-evaluation/token_compression/prumerge.py``
(L47-67, L194-310). Algorithm (card §2), per image:

1. **Score.** LLaVA: the last CLIP layer's (layer 23 = ``qk(-1)``, whose input is the features LLaVA uses)
   queries and keys as **one head over the full width**, ``a = softmax(q_CLS K^T / sqrt(width))[patches]``.
   Qwen2.5-VL (no CLS, VisionSelector port): the attention each merged token *receives* in the last vision
   block — mean over heads and over all pre-merger queries, mean over the token's 4 sub-patches.
2. **Count.** Adaptive (default, no budget/ratio): ``r`` = fraction of the N scores strictly above
   ``Q3 + 1.5 IQR`` (linear-interpolated percentiles, numpy's default) and ``k = int(N * r)`` top tokens by a.
   Fixed budget B (the VisionSelector-port rule, plain top-B for ``prumerge``): the top-B tokens; with the extra
   token on and ``exact_budget`` (default) B-1 are selected so that exactly B tokens reach the LLM.
3. **Merge.** Each kept token i becomes ``x_i + sum_{j in NN32(i)} a_j x_j``: its 32 most similar tokens by
   cosine of the same layer's keys (full width on LLaVA; on Qwen the concatenated heads' post-RoPE keys averaged
   over the 4 sub-patches), searched among *all other* tokens (kept or pruned), weighted by the raw, unnormalised
   scores (the official ``/ torch.sum(weights)`` is commented out). One batched matmul + top-k, no loop over N;
   every kept token is updated from the *original* features, as the official loop does.
4. **Extra token** ``sum_{j pruned} a_j x_j``, appended last.

Order: kept tokens attention-descending (top-k order), extra last; the LLaVA LLM sees them at contiguous
positions (the official LLaVA sequence is simply shorter).

Decisions where the card or the code leaves a detail open ([unverified] / not covered):

* Batching: the IQR statistics are taken **per image** (the official code flattens the batch, and its PruMerge+
  supplement only works with batch 1), so a sample gets the same tokens whatever batch it is in.
* ``k = max(1, int(N r))``: an image without outliers keeps its single most-attended token (the official code
  would keep none, and PruMerge+ would divide by zero); the VisionSelector port clamps the same way.
* Fixed budget for plain ``prumerge`` is top-B (the card gives the budget rule only for the PruMerge+ port);
  ``exact_budget=True`` by default so that budgets 192/128/64 mean exactly that many LLM visual tokens
  (B-1 selected + the extra token); ``exact_budget=False`` selects B and hands B+1 to the LLM.
* Qwen2.5-VL defaults follow the VisionSelector port: the merge acts on the **post-merger (LLM-space)** features
  (``merge_space="llm"``) and there is **no extra token** (``extra_token=False``). The port keeps the features in
  attention order but gives them the *sorted* original M-RoPE ids, which pairs features with other tokens'
  positions; we keep its position sequence and fix the pairing by emitting the kept tokens in **spatial order**
  (``order="spatial"``), each at its own original M-RoPE id (``positions="original"``).
* If the extra token is enabled where nothing was pruned it is the zero vector (as the official sum over an
  empty set). Its representative source index (used only for ``positions="original"`` and reporting) is the
  pruned token with the largest score, or the last visual token when nothing was pruned.
* Merge arithmetic runs in fp32 and is cast back to the features' dtype (the official code runs in fp16).

Keep-all: no setting is an identity while the merge is on (every kept token absorbs its neighbours). With
``budget=N, neighbours=0, extra_token=False, order="spatial"`` it hands the LLM exactly the vanilla tokens.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from stepprune.backbones.types import VisionFeatures, VisualTokens
from stepprune.methods.base import MethodConfig, PruningMethod, SelectionContext, family_default
from stepprune.methods.registry import register
from stepprune.methods.token_rows import complement, stack_rows
from stepprune.methods.vision_signals import received_attention, token_keys

# Per backbone family (``adapter.family``): what the official LLaVA code / the VisionSelector Qwen port do.
POSITIONS = {"llava": "contiguous", "qwen2_5_vl": "original"}
EXTRA_TOKEN = {"llava": True, "qwen2_5_vl": False}
ORDER = {"llava": "attention", "qwen2_5_vl": "spatial"}
MERGE_SPACE = {"llava": "vision", "qwen2_5_vl": "llm"}


def iqr_outlier_count(scores: Tensor) -> int:
    """Number of scores strictly above ``Q3 + 1.5 * (Q3 - Q1)`` (linear-interpolated quartiles, in fp64).

    Args:
        scores: (N,) one image's token scores.
    """
    x = scores.detach().double().flatten()
    q1, q3 = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=x.dtype, device=x.device))
    return int((x > q3 + 1.5 * (q3 - q1)).sum())


def adaptive_keep(scores: Tensor) -> tuple[int, float]:
    """PruMerge's adaptive count for one image.

    Returns:
        ``(k, r)``: the outlier ratio ``r`` and ``k = max(1, int(N * r))`` tokens to keep (the official
        ``int(N * reduction_ratio)``, clamped to at least one token).
    """
    n = scores.numel()
    ratio = iqr_outlier_count(scores) / n
    return max(1, int(n * ratio)), ratio


def single_head_cls_attention(vision: VisionFeatures, layer: int) -> Tensor:
    """LLaVA: the CLS query's attention over the patches with all heads as one head of full width.

    Returns:
        (B, N) fp32 ``softmax(q_CLS K^T * width^-1/2)[1:]``, with q, K the layer's unscaled q_proj/k_proj outputs.
    """
    q, k, _ = vision.qk(layer)  # (B, H, T, d)
    B, H, T, d = k.shape
    q_cls = q[:, :, 0].reshape(B, 1, H * d).float()  # heads side by side = the q_proj output row
    keys = k.transpose(1, 2).reshape(B, T, H * d).float()
    logits = (q_cls @ keys.transpose(1, 2)) * (H * d) ** -0.5  # (B, 1, T); only the CLS row is needed
    return logits.softmax(dim=-1)[:, 0, 1:]


def merge_neighbours(x: Tensor, keys: Tensor, weights: Tensor, keep: Tensor, neighbours: int) -> Tensor:
    """Adds to each kept token its ``neighbours`` most key-similar other tokens, weighted by their raw scores.

    Args:
        x: (N, d) features of one image.
        keys: (N, d_k) key vectors (cosine similarity is taken on them).
        weights: (N,) scores used as (unnormalised) merge weights.
        keep: (k,) long indices of the kept tokens (distinct).
        neighbours: neighbours per kept token (capped at N-1); 0 disables the merge.

    Returns:
        (k, d) fp32 ``x_i + sum_{j in NN(i)} w_j x_j`` for each kept i, from the unmerged features.
    """
    xf = x.float()
    base = xf[keep]
    m = min(neighbours, x.shape[0] - 1)
    if m <= 0 or keep.numel() == 0:
        return base
    kn = F.normalize(keys.float(), dim=-1)
    sim = kn[keep] @ kn.T  # (k, N) cosine to every token
    sim[torch.arange(keep.numel(), device=sim.device), keep] = float("-inf")  # never its own neighbour
    nbr = sim.topk(m, dim=1).indices  # (k, m)
    # A sparse (k, N) weight matrix turns the per-token neighbour sums into one matmul.
    w = torch.zeros_like(sim).scatter_(1, nbr, weights.float()[nbr])
    return base + w @ xf


@dataclasses.dataclass
class PruMergeConfig(MethodConfig):
    """Config of ``prumerge`` and ``prumerge_plus``.

    Attributes:
        budget: fixed number of LLM visual tokens (None with ratio None: the adaptive IQR count).
        ratio: fixed fraction of each image's tokens instead (``max(1, int(ratio * N))``).
        positions: None = contiguous on LLaVA, original M-RoPE ids on Qwen2.5-VL.
        layer: vision layer of the scores and keys (-1: CLIP layer 23 / Qwen's last, full-attention block).
        neighbours: tokens merged into each kept token (official 32); 0 disables the merge.
        extra_token: append the token summarising the pruned ones. None = on for LLaVA, off for Qwen (port).
        exact_budget: with a budget and the extra token, select B-1 tokens so that exactly B reach the LLM.
        order: ``"attention"`` (official: score-descending, PruMerge+ supplement after) or ``"spatial"`` (kept
            tokens by source index); the extra token is always last. None = attention on LLaVA, spatial on Qwen.
        merge_space: ``"vision"`` merges pre-projector features (official LLaVA) then projects; ``"llm"``
            merges the projected features (Qwen port). None = vision on LLaVA, llm on Qwen.
    """

    positions: Literal["original", "contiguous"] | None = None
    layer: int = -1
    neighbours: int = 32
    extra_token: bool | None = None
    exact_budget: bool = True
    order: Literal["attention", "spatial"] | None = None
    merge_space: Literal["vision", "llm"] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.neighbours, bool) or int(self.neighbours) != self.neighbours or self.neighbours < 0:
            raise ValueError(f"{type(self).__name__}: neighbours must be an integer >= 0, got {self.neighbours!r}")
        if self.order not in (None, "attention", "spatial"):
            raise ValueError(f"{type(self).__name__}: order must be 'attention', 'spatial' or None, "
                             f"got {self.order!r}")
        if self.merge_space not in (None, "vision", "llm"):
            raise ValueError(f"{type(self).__name__}: merge_space must be 'vision', 'llm' or None, "
                             f"got {self.merge_space!r}")

    @property
    def adaptive(self) -> bool:
        """True when neither a budget nor a ratio is set (the official IQR count)."""
        return self.budget is None and self.ratio is None


@register
class PruMerge(PruningMethod):
    """LLaVA-PruMerge: IQR-outlier CLS-attention tokens, each merged with its 32 nearest neighbours, + 1 extra."""

    name = "prumerge"
    config_class = PruMergeConfig
    hook_point = "pre_llm"
    uses_text = False
    default_positions: ClassVar = POSITIONS

    def scores(self, vision: VisionFeatures, family: str) -> Tensor:
        """(B, N) fp32 token scores: single-head CLS attention (LLaVA) or attention received (Qwen)."""
        if family == "llava":
            return single_head_cls_attention(vision, self.config.layer)
        return received_attention(vision, self.config.layer, "mean")

    def keep_indices(self, scores: Tensor, n: int, sample: int, extra: bool) -> Tensor:
        """(k,) kept token indices of one image in official order (score-descending).

        Args:
            scores: (n,) the image's scores.
            extra: whether an extra token will be appended (then a budget keeps one token fewer).
        """
        if self.config.adaptive:
            k, _ = adaptive_keep(scores)
        else:
            k = self.selected_count(n, sample, extra)
        return scores.topk(k).indices

    def selected_count(self, n: int, sample: int, extra: bool) -> int:
        """Tokens to select in fixed-budget mode, leaving room for the extra token when the budget is exact."""
        budget = self.config.keep_count(n, sample)
        return budget - 1 if extra and self.config.exact_budget else budget

    def select(self, ctx: SelectionContext) -> VisualTokens:
        cfg, vision, family = self.config, ctx.vision, ctx.adapter.family
        extra = family_default(cfg.extra_token, EXTRA_TOKEN, family, f"{self.name}: extra_token")
        order = family_default(cfg.order, ORDER, family, f"{self.name}: order")
        space = family_default(cfg.merge_space, MERGE_SPACE, family, f"{self.name}: merge_space")
        scores = self.scores(vision, family)
        keys = token_keys(vision, cfg.layer, "concat", family)
        feats = vision.tokens if space == "vision" else ctx.projected()
        rows, sources = [], []
        for b, n in enumerate(vision.num_tokens.tolist()):
            a, x = scores[b, :n], feats[b, :n]
            keep = self.keep_indices(a, n, b, extra)
            merged = merge_neighbours(x, keys[b, :n], a, keep, cfg.neighbours)
            if order == "spatial":
                keep, perm = keep.sort()
                merged = merged[perm]
            if extra:
                pruned = complement(keep, n)
                summary = (a[pruned, None] * x[pruned].float()).sum(dim=0, keepdim=True)
                rep = pruned[a[pruned].argmax()] if pruned.numel() else torch.tensor(n - 1, device=keep.device)
                merged = torch.cat([merged, summary])
                keep = torch.cat([keep, rep.view(1)])
            rows.append(merged.to(feats.dtype))
            sources.append(keep)
        out = stack_rows(rows, sources)
        if space == "vision":
            out.embeds = ctx.adapter.project(out.embeds)  # row-wise projector; padding rows stay padding
        return out
