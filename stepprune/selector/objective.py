"""The objective of Eq. (15): the straight-through length term, the running budget k_bar, and the schedules of the
text gate alpha, the SoftTopK sharpness beta and the length weight lambda.

    L = L_LM + lambda * mean_b [ (K_b + K^_b - sg(K^_b)) / N_b ]

The value of the length term is the realised selection ratio K_b / N_b (as the paper states); its gradient is that
of the smooth expected count K^_b = sum_{t <= T_ep} a_{t+1} (:func:`stepprune.selector.scores.expected_count`),
which flows through the alive probabilities a_t into the stop slot and every decoder parameter. L_LM is computed by
the trainer (``adapter.lm_loss``); the method returns lambda times the length term as its ``aux_loss``.

Schedules are functions of the 0-based optimizer step and ``total_steps`` (the trainer sets it in the config):

* alpha: ``alpha_start`` -> 1 linearly over the first ``alpha_warmup_frac`` of the steps, then 1 (1 at inference);
* beta: cosine ``beta_start`` -> ``beta_end`` over min(``beta_anneal_steps``, ``beta_anneal_frac`` * total), then
  fixed;
* lambda: ``lambda_``, optionally 0 for the first ``lambda_delay_frac`` and then linear over ``lambda_ramp_frac``
  (the spec's optional warm-up; off by default, as in the paper).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stepprune.selector.config import StepPruneConfig


def length_term(count: Tensor, k_hat: Tensor, num_tokens: Tensor) -> Tensor:
    """Per-sample straight-through length ratio (K_b + K^_b - sg(K^_b)) / N_b, (B,).

    Args:
        count: (B,) hard counts K_b.
        k_hat: (B,) differentiable expected counts K^_b.
        num_tokens: (B,) N_b.
    """
    return (count.to(k_hat.dtype) + k_hat - k_hat.detach()) / num_tokens.to(k_hat.dtype)


class Schedules:
    """alpha(step), beta(step) and lambda(step) of one config (module docstring)."""

    def __init__(self, config: StepPruneConfig):
        self.config = config

    def _total(self) -> int:
        if self.config.total_steps is None:
            raise ValueError("StepPruneConfig.total_steps is not set: the trainer must set it to the number of "
                             "optimizer steps of the run before training (the alpha/beta/lambda schedules use it)")
        return self.config.total_steps

    def alpha(self, step: int) -> float:
        c = self.config
        span = c.alpha_warmup_frac * self._total()
        if span <= 0:
            return 1.0
        return c.alpha_start + (1.0 - c.alpha_start) * min(max(step, 0) / span, 1.0)

    def beta(self, step: int) -> float:
        c = self.config
        span = min(c.beta_anneal_steps, c.beta_anneal_frac * self._total())
        frac = 1.0 if span <= 0 else min(max(step, 0) / span, 1.0)
        return c.beta_end + (c.beta_start - c.beta_end) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def lam(self, step: int) -> float:
        c = self.config
        total = self._total()
        delay, ramp = c.lambda_delay_frac * total, c.lambda_ramp_frac * total
        if step < delay:
            return 0.0
        if ramp <= 0:
            return c.lambda_
        return c.lambda_ * min((step - delay) / ramp, 1.0)


class RunningBudget(nn.Module):
    """k_bar: the running batch average of the hard count (EMA, momentum rho), initialised at K_max.

    It is a buffer, so it is saved with the selector and restored on resume.
    """

    def __init__(self, init: float, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.tensor(float(init)))

    @torch.no_grad()
    def update(self, count: Tensor) -> None:
        """k_bar <- rho k_bar + (1 - rho) mean_b K_b (no host sync)."""
        self.value.mul_(self.momentum).add_((1.0 - self.momentum) * count.float().mean())

    def budget(self, num_tokens: Tensor, per_sample: Tensor | None = None) -> Tensor:
        """The SoftTopK budget per sample, (B,) float, clamped to [1, N_b - 1].

        Args:
            num_tokens: (B,) N_b.
            per_sample: (B,) hard counts K_b for the per-sample ablation, or None for k_bar.
        """
        k = self.value.expand(num_tokens.shape[0]) if per_sample is None else per_sample.float()
        lo = torch.ones_like(k)
        hi = (num_tokens.float() - 1.0).clamp(min=1.0)
        return torch.minimum(torch.maximum(k, lo), hi)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"
