"""VisionSelector (arXiv 2510.16598): a learned importance scorer on the LLM-space visual tokens, trained through the
frozen VLM with a differentiable top-K and a curriculum-annealed BCE, and applied as a hard top-K at inference.

Algorithm (design card §8; official code ``JulietChoo/VisionSelector`` snapshot 800a70f, read, not copied):

* **Scorer** (the only trainable part): two linear maps q = W_q x + b_q, k = W_k x + b_k, D -> D/2, on the
  post-projector tokens (LLaVA: after the multimodal projector; Qwen2.5-VL: after the 2x2 merger). Score
  s_i = (1/N) sum_j q_i . k_j / sqrt(D/2) = q_i . mean_j(k_j) / sqrt(D/2). Weights N(0, std 1e-4), biases 0, so
  scores start ~0 (the official ``TransformerScorer`` uses ``nn.init.normal_(std=1e-4)``).
* **Training** (:meth:`VisionSelector.train_forward`): the soft mask m_i = sigmoid(s_i + t), t bisected so that
  sum_i m_i = K, with the implicit-function backward — the project's one solver,
  :func:`stepprune.methods.sigmoid_topk.sigmoid_topk` (StepPrune's SoftTopK is the same primitive). The visual
  tokens are **multiplied** by m; nothing is removed (all N tokens at their original positions reach the LLM).
  Loss = CE(next token) + lambda(step) * BCE(m, hard top-K of s), lambda linear from ``reg_weight_start`` = 0.1 to
  ``reg_weight_end`` = 2.0 over ``total_steps`` (Qwen scripts; the LLaVA-OV script ends at 3.0). The trainer adds
  the CE; :class:`~stepprune.methods.base.TrainOutput` carries lambda * BCE.
* **Inference** (:meth:`VisionSelector.select`): scores of the frozen tokens, hard top-K with
  K = ``max(1, int(N * ratio))`` (floor) or the count ``budget``, indices sorted (spatial order), the kept tokens at
  their **original** position ids (Qwen: their original 3-D M-RoPE ids; generation continues after the unpruned
  sequence, i.e. ``rope_deltas`` of the original prompt).

Choices where the card is silent (all configurable or stated here):

* Training budget: ``train_ratio`` = 0.2 (the card's recipe) or a count ``train_budget``; K = ``max(1,
  int(N * train_ratio))`` per image, as at inference. When K >= N the mask is all ones (nothing to select).
* Inference budget: the shared ``budget`` / ``ratio`` fields (evaluation sets them per cell); when neither is set the
  training budget is used, so a trained checkpoint is usable as saved.
* The mean over k_j runs over each image's valid tokens only (Qwen batches pad images of different sizes; the
  official code runs one image at a time), so a batch equals its samples one by one.
* BCE is the mean over every valid token of the batch, computed in fp32 by hand (logs clamped at -100 as
  ``F.binary_cross_entropy`` does, which refuses to run under CUDA autocast). The hard target is the detached top-K
  indicator of the same scores (ties: ``torch.topk``).
* The scorer reads detached tokens (the backbone is frozen anyway) in its own (fp32) parameter dtype; the mask
  multiplies the tokens in fp32 and the product is cast back to the LLM's dtype.
* A LLaVA-1.5 variant is not released (Qwen2.5-VL and LLaVA-OV-1.5 are); on LLaVA-1.5 the scorer sits on the
  post-projector 576 x D tokens, the card's "natural analogue".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.types import VisualTokens
from stepprune.methods.backbone_bound import BackboneBoundMethod
from stepprune.methods.base import MethodConfig, SelectionContext, TrainOutput
from stepprune.methods.in_llm import topk_keep
from stepprune.methods.registry import register
from stepprune.methods.schedule import linear_ramp
from stepprune.methods.sigmoid_topk import sigmoid_topk
from stepprune.methods.token_rows import pad_index_rows


@dataclasses.dataclass
class VisionSelectorConfig(MethodConfig):
    """Config of ``visionselector``.

    Attributes:
        budget / ratio: the inference budget (count or floor fraction); neither = the training budget.
        train_ratio: retained fraction K / N during training (card: 0.2). Set it to None to train with a count.
        train_budget: retained count K during training instead of ``train_ratio`` (give one of the two).
        reg_weight_start / reg_weight_end: the BCE weight lambda, linear over ``total_steps`` (card: 0.1 -> 2.0).
        total_steps: optimizer steps of the training run (the trainer fills it in; required by training).
        d_llm: the LLM width D the scorer reads (filled from the backbone by ``bind``; recorded in checkpoints).
        init_std: std of the scorer's initial weights (card: 1e-4).
    """

    train_ratio: float | None = 0.2
    train_budget: int | None = None
    reg_weight_start: float = 0.1
    reg_weight_end: float = 2.0
    total_steps: int | None = None
    d_llm: int | None = None
    init_std: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if (self.train_ratio is None) == (self.train_budget is None):
            raise ValueError(f"{name}: give train_ratio or train_budget, exactly one (set train_ratio to null to "
                             "train with a count)")
        if self.train_ratio is not None and not 0.0 < float(self.train_ratio) <= 1.0:
            raise ValueError(f"{name}: train_ratio must be in (0, 1], got {self.train_ratio!r}")
        if self.train_budget is not None and (isinstance(self.train_budget, bool)
                                              or int(self.train_budget) != self.train_budget
                                              or self.train_budget < 1):
            raise ValueError(f"{name}: train_budget must be an integer >= 1, got {self.train_budget!r}")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"{name}: total_steps must be >= 1, got {self.total_steps}")
        if self.d_llm is not None and (self.d_llm < 2 or self.d_llm % 2):
            raise ValueError(f"{name}: d_llm must be an even integer >= 2 (the scorer maps D -> D/2), "
                             f"got {self.d_llm}")
        if self.init_std <= 0:
            raise ValueError(f"{name}: init_std must be > 0, got {self.init_std}")

    def train_count(self, n: int, sample: int = 0) -> int:
        """K during training for an image of ``n`` tokens."""
        if self.train_budget is not None:
            if self.train_budget > n:
                raise ValueError(f"sample {sample}: train_budget {self.train_budget} exceeds its {n} visual tokens")
            return int(self.train_budget)
        return max(1, int(self.train_ratio * n))

    def inference_count(self, n: int, sample: int = 0) -> int:
        """K at inference: the budget / ratio when set, else the training budget."""
        if self.budget is None and self.ratio is None:
            return self.train_count(n, sample)
        return self.keep_count(n, sample)


class ImportanceScorer(nn.Module):
    """s_i = q_i . mean_j(k_j) / sqrt(D/2) with q, k two linear maps D -> D/2 (VisionSelector's scorer).

    Args:
        d: token width D (even).
        init_std: std of the initial weights (biases start at 0).
    """

    def __init__(self, d: int, init_std: float = 1e-4):
        super().__init__()
        self.hidden = d // 2
        self.q_proj = nn.Linear(d, self.hidden)
        self.k_proj = nn.Linear(d, self.hidden)
        for lin in (self.q_proj, self.k_proj):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Scores of (B, N, D) tokens with a (B, N) validity mask -> (B, N) (0 on padding).

        The mean of the keys runs over each image's valid tokens only, so padding never changes a score.
        """
        q, k = self.q_proj(x), self.k_proj(x)
        w = mask.to(k.dtype)[..., None]
        k_mean = (k * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # (B, D/2)
        s = (q @ k_mean[..., None])[..., 0] / math.sqrt(self.hidden)
        return s.masked_fill(~mask, 0.0)


def bce(m: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean binary cross-entropy of soft values ``m`` against 0/1 ``target`` over the valid entries, fp32.

    Like ``F.binary_cross_entropy`` (which refuses CUDA autocast, hence by hand) a saturated log is -100: where
    ``m`` is exactly 0 or 1 the log is that constant, with no gradient. ``log(m).clamp_min(-100)`` would send
    0 * inf = NaN back through the clamp, which is what made every step of the embedded VisionSelector run
    non-finite once its scores spread (DeepSpeed skipped them all; DDP turned the weights to NaN). Elsewhere the
    fp32 logs are at least log(tiny) = -87.3 (log m) and log(2^-24) = -16.6 (log(1 - m)), so no further clamp acts.
    """
    m, target = m.float(), target.float()
    tiny = torch.finfo(torch.float32).tiny  # finite value and gradient on the branch torch.where does not take
    log_m = torch.where(m > 0, torch.log(m.clamp_min(tiny)), -100.0)
    log_not = torch.where(m < 1, torch.log1p(-m.clamp_max(1.0 - 2.0 ** -24)), -100.0)
    per = -(target * log_m + (1.0 - target) * log_not)
    w = mask.float()
    return (per * w).sum() / w.sum().clamp_min(1.0)


@register
class VisionSelector(BackboneBoundMethod):
    """VisionSelector: a learned q.mean(k) scorer on LLM-space visual tokens, hard top-K at inference."""

    name = "visionselector"
    config_class = VisionSelectorConfig
    hook_point = "pre_llm"
    uses_text = False
    training_free = False
    budgeted = True
    dim_descriptions = {"d_llm": "LLM embedding width"}

    def __init__(self, config: VisionSelectorConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self.last_diagnostics: dict[str, Tensor] = {}
        if self.dims_known:
            self._build()

    # ------------------------------------------------------------------------------------------- building
    @property
    def built(self) -> bool:
        return hasattr(self, "scorer")

    def _build(self, device: torch.device | None = None) -> None:
        self.scorer = ImportanceScorer(self.config.d_llm, self.config.init_std)
        if device is not None:
            self.to(device)

    def backbone_dims(self, adapter: BackboneAdapter) -> dict[str, int]:
        return {"d_llm": int(adapter.hidden_size)}

    def _ready(self, ctx: SelectionContext) -> None:
        if not self.built:
            self.bind(ctx.adapter)
        width = ctx.projected().shape[-1]
        if width != self.config.d_llm:
            raise ValueError(f"visionselector scorer expects visual tokens {self.config.d_llm} wide, got {width}")

    # ------------------------------------------------------------------------------------------- scoring
    def scores(self, ctx: SelectionContext) -> Tensor:
        """(B, N) fp32 scores of the projected visual tokens (0 on padding)."""
        self._ready(ctx)
        dtype = self.scorer.q_proj.weight.dtype
        return self.scorer(ctx.projected().detach().to(dtype), ctx.vision.token_mask).float()

    @staticmethod
    def _counts(ctx: SelectionContext, count) -> list[int]:
        return [count(int(n), b) for b, n in enumerate(ctx.vision.num_tokens.tolist())]

    # ------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def select(self, ctx: SelectionContext) -> VisualTokens:
        """Hard top-K of the scores per image, indices sorted ascending (original spatial order)."""
        s = self.scores(ctx)
        keep = topk_keep(s, ctx.vision.token_mask, self._counts(ctx, self.config.inference_count))
        index, count = pad_index_rows([row.nonzero().flatten() for row in keep])
        self.last_diagnostics = {"scores": s, "keep": keep}
        return VisualTokens.gather(ctx.projected(), index, count)

    # ------------------------------------------------------------------------------------------- training
    def reg_weight(self, step: int) -> float:
        """lambda(step): ``reg_weight_start`` -> ``reg_weight_end`` linearly over ``total_steps``."""
        c = self.config
        return linear_ramp(c.reg_weight_start, c.reg_weight_end, step, c.total_steps, f"{self.name}")

    def soft_mask(self, s: Tensor, mask: Tensor, k: Tensor) -> Tensor:
        """m = sigmoid(s + t) with sum m = k per image (all ones where k >= N), (B, N), 0 on padding."""
        n = mask.sum(dim=1).to(s.dtype)
        full = k >= n
        m = sigmoid_topk(s, torch.where(full, n - 0.5, k), mask)  # a well-posed budget on the rows kept whole
        return torch.where(full[:, None], mask.to(s.dtype), m)

    def train_forward(self, ctx: SelectionContext, step: int) -> TrainOutput:
        """All N tokens multiplied by the soft top-K mask (original positions), aux = lambda(step) * BCE."""
        lam = self.reg_weight(step)
        s = self.scores(ctx)
        mask = ctx.vision.token_mask
        counts = self._counts(ctx, self.config.train_count)
        k = torch.tensor(counts, dtype=s.dtype, device=s.device)
        m = self.soft_mask(s, mask, k)
        hard = topk_keep(s.detach(), mask, counts)
        loss = bce(m, hard, mask)
        proj = ctx.projected()
        gated = (proj.float() * m[..., None]).to(proj.dtype)
        B, N = mask.shape
        index = torch.arange(N, device=s.device)[None].expand(B, -1)
        visual = VisualTokens(gated, index, ctx.vision.num_tokens.clone())
        self.last_diagnostics = {"scores": s.detach(), "mask": m.detach(), "keep": hard, "k": k}
        with torch.no_grad():
            w = mask.float()
            metrics = {
                "lambda": torch.tensor(lam), "bce": loss.detach(),
                # share of the soft mass on the hard top-K: 1 when the mask has become the K-hot indicator
                "topk_mass": ((m * hard).sum(dim=1) / k).mean(),
                "mask_sum_over_k": (m.sum(dim=1) / k).mean(),
                "score_std": (((s - (s * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)) ** 2 * w).sum()
                              / w.sum()).sqrt(),
                "K_mean": k.mean(),
            }
        return TrainOutput(visual, lam * loss, metrics)
