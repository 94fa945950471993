"""DyRate-style (reimplemented): decode-time pruning of visual KV entries with a progressive, predicted rate.

DyRate ("Dynamic Token Reduction during Generation for VLMs", arXiv 2501.14204) has no public code and its method
section could not be read (design card §9, [paper-only]). Established: visual attention falls as generation
proceeds, so the pruning rate grows during decoding, and a lightweight predictor maps the attention distribution
to the rate of the current step. Everything below is the card's suggested reconstruction, with the details decided
here; label it "DyRate-style (reimplemented)".

**Inference** (:meth:`DyRate.decode_hooks`, one :class:`~stepprune.backbones.hooks.DecodeEvict` at layer K).
Prefill is unpruned. Before layer group K runs at decode step t (t = 0 feeds the first generated token):

1. take the new token's post-softmax attention at layer K-1 over that layer's cache (layers < K are never
   evicted, so this row sees every visual token), averaged over heads;
2. features f_t = [visual attention mass, entropy of the attention renormalised over the visual tokens divided
   by log N_v, min(t / horizon, 1)];
3. a tiny MLP (3 -> ``hidden`` -> |rates|) picks a keep ratio rho_t from ``rates`` (argmax; default
   {1, 0.75, 0.5, 0.25, 0.1});
4. kept count k_t = min(k_{t-1}, ceil(N_v * rho_t)) with k_{-1} = N_v: monotone non-increasing by construction;
5. among the visual entries still cached at layers >= K, keep the k_t with the highest attention of step 1 (ties:
   ``torch.topk``) and evict the rest from the caches of every layer >= K. Kept entries keep their positions.

**Training** (:meth:`DyRate.train_forward`; the VLM is frozen, only the predictor trains). The reference answer
is teacher-forced in one prefill, and an :class:`~stepprune.backbones.hooks.AttentionBias` from layer K on makes
answer slot t (the slot whose input is generated token t, i.e. decode step t) see only the visual tokens kept after
step t's eviction, exactly as cached decoding does; the prompt rows (including the last one, which predicts the
first answer token) see everything. The same hook computes the layer K-1 rows of the answer slots (identical to
decoding's, since layers < K are unbiased), the features, and the per-step choices:

* rates by straight-through Gumbel-softmax (one-hot forward, soft backward, temperature ``gumbel_tau``); the target
  count is sum_r y_r ceil(N_v rho_r) and k_t its running minimum (``torch.cummin``, differentiable);
* the eviction is relaxed into nested soft top-k masks, m_t = m_{t-1} * sigmoid(log(a_t) / tau + s_t) with s_t
  solved so that sum_j m_t,j = k_t (the shared solver :func:`~stepprune.methods.sigmoid_topk.sigmoid_topk` with
  weights m_{t-1}); its implicit gradient in k_t carries the LM loss to the rate choice. tau anneals linearly
  from ``mask_tau_start`` to ``mask_tau_end`` over ``total_steps``; as tau -> 0 the masks become the hard
  eviction of inference (``hard=True`` builds exactly those, tested against cached decoding);
* the bias is log(m_t) on the visual columns of answer row t (hard: 0 or the dtype's minimum);
* loss = next-token CE + ``beta`` * kept fraction, the latter the mean of k_t / N_v over the answer rows that
  predict a labelled token (its value is the realised kept fraction, its gradient the straight-through one).

Choices where the card is silent: K = 2 (FastV convention) with the in-LLM layer mapping; features, rates, MLP
width 16, ``horizon`` = 64 steps for the step feature, beta = 0.2 (unverified); the eviction score is the current
step's attention (not an accumulated one); an untrained predictor (zero-initialised output layer: equal logits,
argmax = the first rate, 1.0) keeps everything, i.e. reproduces vanilla; a multi-turn conversation is treated as
one generation from its first answer token on; ``schedule`` replaces the predictor by fixed per-step rates (the
last one repeats) for ablations and tests.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from stepprune.backbones.hooks import AttentionBias, DecodeEvict
from stepprune.backbones.llm import DecodeContext, PrefillContext
from stepprune.backbones.types import VISUAL
from stepprune.methods.base import SelectionContext, TrainOutput
from stepprune.methods.in_llm import InLLMConfig, InLLMMethod, topk_keep
from stepprune.methods.registry import register
from stepprune.methods.schedule import linear_ramp
from stepprune.methods.sigmoid_topk import sigmoid_topk

DEFAULT_RATES = (1.0, 0.75, 0.5, 0.25, 0.1)
NUM_FEATURES = 3
_TINY = 1e-30  # floor of attention probabilities before a log


@dataclasses.dataclass
class DyRateConfig(InLLMConfig):
    """Config of ``dyrate`` (DyRate-style, reimplemented).

    Attributes:
        k: the first decoder layer whose visual KV entries are evicted; the features and the eviction scores come
            from layer k-1 (FastV convention, default 2).
        rates: the keep ratios the predictor chooses from, strictly decreasing in (0, 1].
        schedule: fixed keep ratios per decode step (the last repeats) instead of the predictor, or None.
        hidden: width of the predictor MLP.
        horizon: decode steps over which the step-fraction feature rises from 0 to 1.
        beta: weight of the kept-fraction cost in the training loss.
        gumbel_tau: temperature of the straight-through Gumbel-softmax (backward only; the forward is one-hot).
        mask_tau_start / mask_tau_end: temperature of the soft eviction masks, linear over ``total_steps``.
        total_steps: optimizer steps of the training run (the trainer fills it in; required by training).
    """

    k: int = 2
    rates: list[float] = dataclasses.field(default_factory=lambda: list(DEFAULT_RATES))
    schedule: list[float] | None = None
    hidden: int = 16
    horizon: int = 64
    beta: float = 0.2
    gumbel_tau: float = 1.0
    mask_tau_start: float = 1.0
    mask_tau_end: float = 0.1
    total_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.budget is not None or self.ratio is not None:
            raise ValueError(f"{name}: DyRate-style pruning chooses its keep ratio per decode step and takes no "
                             "budget or ratio; set rates (or a fixed schedule) and beta")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"{name}: k must be an integer >= 1 (features come from layer k-1), got {self.k!r}")
        rates = list(self.rates)
        if not rates or any(not 0.0 < r <= 1.0 for r in rates) or any(b >= a for a, b in zip(rates, rates[1:])):
            raise ValueError(f"{name}: rates must be strictly decreasing values in (0, 1], got {rates}")
        if self.schedule is not None and (not self.schedule or any(not 0.0 < r <= 1.0 for r in self.schedule)):
            raise ValueError(f"{name}: schedule must list keep ratios in (0, 1], got {self.schedule}")
        for field in ("hidden", "horizon"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}: {field} must be >= 1, got {getattr(self, field)}")
        if self.beta < 0 or self.gumbel_tau <= 0 or self.mask_tau_start <= 0 or self.mask_tau_end <= 0:
            raise ValueError(f"{name}: beta must be >= 0 and the temperatures > 0")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"{name}: total_steps must be >= 1, got {self.total_steps}")


class RatePredictor(nn.Module):
    """Attention features (..., 3) -> logits over the keep ratios (..., R): Linear, GELU, Linear.

    The output layer starts at zero, so an untrained predictor gives equal logits (argmax: the first ratio).
    """

    def __init__(self, num_rates: int, hidden: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(NUM_FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, num_rates)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(features)))


def attention_features(rows: Tensor, visual: Tensor, step: Tensor, horizon: int) -> Tensor:
    """The predictor's inputs for each query row.

    Args:
        rows: (B, q, L) head-averaged post-softmax attention of the query rows over L key slots.
        visual: (B, L) bool, the visual key slots.
        step: (B, q) decode step of each row (0 = the first generated token).
        horizon: steps over which the step feature goes from 0 to 1.

    Returns:
        (B, q, 3) fp32: visual attention mass, visual entropy / log(N_v), min(step / horizon, 1).
    """
    a = rows.float() * visual[:, None, :].float()
    mass = a.sum(dim=-1)
    p = a / mass.clamp_min(_TINY)[..., None]
    entropy = -(p * torch.log(p.clamp_min(_TINY))).sum(dim=-1)
    n_vis = visual.sum(dim=1).float().clamp_min(2.0)
    frac = (step.float() / horizon).clamp(max=1.0)
    return torch.stack([mass, entropy / torch.log(n_vis)[:, None], frac], dim=-1)


def target_counts(n_visual: Tensor, rates: list[float]) -> Tensor:
    """(B, R) ceil(N_v * rho) per sample and ratio, at least 1 (a tiny guard keeps 0.3 * 10 at 3)."""
    r = torch.tensor(rates, dtype=torch.float64, device=n_visual.device)
    return torch.ceil(n_visual.double()[:, None] * r - 1e-9).clamp_min(1.0).to(torch.float32)


@register
class DyRate(InLLMMethod):
    """DyRate-style (reimplemented): evict low-attention visual KV entries at a predicted, rising rate."""

    name = "dyrate"
    config_class = DyRateConfig
    hook_point: ClassVar[str] = "decode"
    uses_text = True
    training_free = False
    budgeted = False

    def __init__(self, config: DyRateConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self.predictor = RatePredictor(len(self.config.rates), self.config.hidden)
        self.last_diagnostics: dict[str, Tensor] = {}

    # ------------------------------------------------------------------------------------------- shared
    def _layer(self, ctx: SelectionContext) -> int:
        (k,) = self.map_layers(ctx, [self.config.k], lowest=1, highest_from_end=1, field="k")
        return k

    def target(self, features: Tensor, step: Tensor, n_visual: Tensor, hard: bool) -> tuple[Tensor, Tensor | None]:
        """Target counts (B, q) for the rows' features, and the predictor's logits (None with a schedule).

        Hard: argmax of the logits (inference). Soft: straight-through Gumbel-softmax (one-hot forward).
        """
        if self.config.schedule is not None:
            sched = torch.tensor(self.config.schedule, dtype=torch.float64, device=step.device)
            rho = sched[step.clamp(max=len(self.config.schedule) - 1)]
            n = torch.ceil(n_visual.double()[:, None] * rho - 1e-9).clamp_min(1.0)
            return n.to(torch.float32), None
        logits = self.predictor(features.to(self.predictor.fc1.weight.dtype)).float()  # (B, q, R)
        if hard:
            y = nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
        else:
            y = nn.functional.gumbel_softmax(logits, tau=self.config.gumbel_tau, hard=True)
        counts = target_counts(n_visual, list(self.config.rates))  # (B, R)
        return (y * counts[:, None, :]).sum(dim=-1), logits

    def mask_tau(self, step: int) -> float:
        """Temperature of the soft eviction masks at optimizer step ``step``."""
        c = self.config
        return linear_ramp(c.mask_tau_start, c.mask_tau_end, step, c.total_steps, self.name)

    # ------------------------------------------------------------------------------------------- inference
    def decode_hooks(self, ctx: SelectionContext) -> list[DecodeEvict]:
        layer = self._layer(ctx)
        n_max = int(ctx.vision.tokens.shape[1])
        log: list[Tensor] = []
        self.last_diagnostics = {}

        @torch.no_grad()
        def select(dctx: DecodeContext) -> Tensor:
            row, g0 = dctx.attention_row(layer - 1)  # (B, H, Lc0) over layer K-1's (never evicted) cache
            mean = row.mean(dim=1)
            vis0 = (g0.segment == VISUAL) & g0.valid
            B = mean.shape[0]
            step = torch.full((B, 1), dctx.step, dtype=torch.long, device=mean.device)
            feats = attention_features(mean[:, None], vis0, step, self.config.horizon)
            n_visual = vis0.sum(dim=1)
            target, _ = self.target(feats, step, n_visual, hard=True)
            b_idx = torch.arange(B, device=mean.device)[:, None].expand_as(vis0)
            scores = torch.zeros(B, n_max, dtype=mean.dtype, device=mean.device)
            scores[b_idx[vis0], g0.visual_index[vis0]] = mean[vis0]
            g = dctx.group  # layer group K, before this step's token is appended
            visK = (g.segment == VISUAL) & g.valid
            kept = torch.zeros(B, n_max, dtype=torch.bool, device=mean.device)
            kept[torch.arange(B, device=mean.device)[:, None].expand_as(visK)[visK], g.visual_index[visK]] = True
            k = torch.minimum(kept.sum(dim=1), target[:, 0].long())
            log.append(k)
            self.last_diagnostics["kept_per_step"] = torch.stack(log, dim=1)
            new = topk_keep(scores, kept, k.tolist())
            keep_vis = torch.gather(new, 1, g.visual_index.clamp(min=0))
            return torch.where(visK, keep_vis, torch.ones_like(visK))

        return [DecodeEvict(layer, select, record_inputs=(layer - 1,))]

    # ------------------------------------------------------------------------------------------- teacher forcing
    def teacher_forcing(self, ctx: SelectionContext, *, hard: bool, step: int = 0
                        ) -> tuple[AttentionBias, dict[str, Any]]:
        """The attention bias that replays decode-time eviction over a teacher-forced answer.

        Args:
            ctx: the batch (its prompt carries labels: the answer tokens).
            hard: True = the exact eviction of cached decoding (argmax choices, 0/1 masks); False = the training
                relaxation (straight-through Gumbel choices, nested soft top-k masks at the annealed temperature).
            step: the optimizer step (sets the mask temperature when soft).

        Returns:
            The hook, and a dict the hook fills during the prefill: ``kept_frac`` (the differentiable mean kept
            fraction over the rows that predict a labelled token), ``kept`` (B, T) counts, ``steps`` (B, T) valid
            rows, ``logits`` (B, T, R) or None.
        """
        layer = self._layer(ctx)
        tau = None if hard else self.mask_tau(step)
        out: dict[str, Any] = {}

        def bias(pctx: PrefillContext) -> Tensor:
            st = pctx.state
            if st.labels is None:
                raise ValueError("dyrate teacher forcing needs labels (prepare the batch with answers)")
            B, L = st.valid.shape
            dev = st.valid.device
            labelled = st.labels != -100
            slots = torch.arange(L, device=dev)
            first = torch.where(labelled, slots, L).amin(dim=1)  # (B,) slot of the first answer token
            T = max(L - int(first.min()), 1)
            s = torch.arange(T, device=dev)
            query = first[:, None] + s  # (B, T) slot whose input is generated token s
            valid = query < L
            query = query.clamp(max=L - 1)
            rows = pctx.attention_rows(layer - 1, query).mean(dim=1)  # (B, T, L)
            vis = (st.segment == VISUAL) & st.valid
            n_visual = vis.sum(dim=1)
            feats = attention_features(rows, vis, s[None].expand(B, -1), self.config.horizon)
            target, logits = self.target(feats, s[None].expand(B, -1), n_visual, hard)
            k = torch.cummin(target, dim=1).values  # (B, T) monotone kept counts
            # Visual-index layout: column j of the masks is visual token j, at slot vslot[b, j].
            n_max = int(ctx.vision.tokens.shape[1])
            vslot = torch.zeros(B, n_max, dtype=torch.long, device=dev)
            vok = torch.zeros(B, n_max, dtype=torch.bool, device=dev)
            b_idx = torch.arange(B, device=dev)[:, None].expand(B, L)
            vslot[b_idx[vis], st.visual_index[vis]] = slots[None].expand(B, L)[vis]
            vok[b_idx[vis], st.visual_index[vis]] = True
            scores = torch.gather(rows, 2, vslot[:, None].expand(B, T, n_max)).masked_fill(~vok[:, None], 0.0)
            masks = self._hard_masks(scores, vok, k) if hard else self._soft_masks(scores, vok, k, tau)
            if hard:
                values = torch.where(masks, 0.0, torch.finfo(st.hidden.dtype).min)
            else:
                values = torch.log(masks.clamp_min(_TINY))
            sel = valid[:, :, None] & vok[:, None, :]
            bi, si, ji = sel.nonzero(as_tuple=True)
            full = torch.zeros(B, L, L, dtype=values.dtype, device=dev)
            full = full.index_put((bi, query[bi, si], vslot[bi, ji]), values[bi, si, ji])
            # Cost rows: the answer rows whose next slot carries a label (they feed the LM loss).
            nxt = (query + 1).clamp(max=L - 1)
            feeds = valid & (query + 1 < L) & torch.gather(labelled, 1, nxt)
            frac = k / n_visual.clamp_min(1)[:, None].float()
            out.update(kept_frac=(frac * feeds).sum() / feeds.sum().clamp_min(1), kept=k.detach(),
                       steps=valid, feeds=feeds, logits=None if logits is None else logits.detach())
            return full.to(st.hidden.dtype)

        return AttentionBias(layer, bias, record_inputs=(layer - 1,)), out

    @staticmethod
    def _hard_masks(scores: Tensor, vok: Tensor, k: Tensor) -> Tensor:
        """(B, T, N) bool: the visual tokens kept after each step's eviction (inference's rule, step by step)."""
        kept = vok.clone()
        out = []
        for t in range(scores.shape[1]):
            kept = topk_keep(scores[:, t], kept, k[:, t].round().long().tolist())
            out.append(kept)
        return torch.stack(out, dim=1)

    @staticmethod
    def _soft_masks(scores: Tensor, vok: Tensor, k: Tensor, tau: float) -> Tensor:
        """(B, T, N) nested soft top-k masks: m_t = m_{t-1} * sigmoid(log(a_t) / tau + s_t), sum_j m_t = k_t."""
        m = vok.float()
        out = []
        for t in range(scores.shape[1]):
            z = torch.log(scores[:, t].float().clamp_min(_TINY)) / tau
            have = m.sum(dim=1)
            evict = k[:, t] < have - 0.5  # counts are integers in the forward pass
            u = sigmoid_topk(z, torch.where(evict, k[:, t], have - 0.5), m)
            m = torch.where(evict[:, None], m * u, m)
            out.append(m)
        return torch.stack(out, dim=1)

    # ------------------------------------------------------------------------------------------- training
    def train_forward(self, ctx: SelectionContext, step: int) -> TrainOutput:
        """Teacher-forced training of the rate predictor: every visual token enters the LLM (nothing is pruned
        before it); the returned attention-bias hook replays the soft eviction inside the LLM; ``finish`` adds
        beta * kept fraction once the prefill has run."""
        if self.config.schedule is not None:
            raise ValueError("dyrate: a fixed schedule has nothing to train (unset schedule to train the predictor)")
        hook, out = self.teacher_forcing(ctx, hard=False, step=step)
        beta, tau = self.config.beta, self.mask_tau(step)

        def finish() -> tuple[Tensor, dict[str, Any]]:
            frac = out["kept_frac"]
            metrics = {"kept_frac": frac.detach(), "beta": torch.tensor(beta), "mask_tau": torch.tensor(tau)}
            if out.get("logits") is not None:
                probs = out["logits"].softmax(dim=-1)[out["feeds"]]
                if probs.numel():
                    metrics["p_keep_all"] = probs[:, 0].mean()
                    metrics["rate_mean"] = (probs * probs.new_tensor(self.config.rates)).sum(dim=-1).mean()
            return beta * frac, metrics

        visual = ctx.adapter.keep_all(ctx.vision)
        zero = torch.zeros((), device=visual.embeds.device)
        return TrainOutput(visual, zero, {}, biases=[hook], finish=finish)
