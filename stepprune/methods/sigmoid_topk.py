"""The differentiable top-k every learned method here shares: a sigmoid with a bisected shift and its exact
implicit gradient.

Problem, per row (B rows of N logits z, non-negative weights w, a budget 0 < k < W = sum_i w_i):

    y_i = sigmoid(z_i + t)   with the scalar t chosen so that   sum_i w_i y_i = k.

* **Forward.** t is found without gradient by bisection in float64 on an exact bracket (below), then one
  *differentiable* Newton step ``t = t* - (sum_i w_i sigmoid(z_i + t*) - k) / sg(sum_i w_i sigmoid'(z_i + t*))``
  is applied. Its value is t* (the residual is ~0); its Jacobian is exactly the implicit-function one, because t*
  carries no gradient and the denominator is detached:
  dt = -(sum_i sigma'_i w_i dz_i + sum_i sigma_i dw_i - dk) / sum_i w_i sigma'_i, hence for unit weights
  dy_i / dz_j = sigma'_i delta_ij - sigma'_i sigma'_j / sum_l sigma'_l (the rank-one term is the derivative of the
  shift). Gradients reach z, w and k.
* **Bracket.** With r = k / W: at t = -max(z) + logit(r) every y_i <= r, so sum w y <= k; at t = -min(z) + logit(r)
  every y_i >= r, so sum w y >= k (max / min over entries with w > 0). The bracket is exact for any logit scale,
  so no temperature or score range is assumed.
* **Weights.** Boolean weights are a validity mask (padding of variable-length rows); real weights in [0, 1] make a
  *nested* soft top-k (keep k of the w-weighted survivors of an earlier soft top-k, DyRate-style eviction).
  Entries with w = 0 output 0.

Users: StepPrune's SoftTopK, Eq. (12) (:mod:`stepprune.selector.soft_topk`: z = (2x - 1) / beta, the exact
two-anchor OT solution); VisionSelector's differentiable top-K (z = s, "sigmoid(s + t) with t bisected so the mask
sums to K, implicit-function backward", arXiv 2510.16598); DyRate-style soft eviction masks.
"""

from __future__ import annotations

import torch
from torch import Tensor

BISECTION_STEPS = 64  # halves the bracket 64 times: below float64 resolution for any bracket width used here


def _as_rows(value: float | Tensor, rows: int, like: Tensor) -> Tensor:
    """A scalar or (B,) value as a (B,) tensor on ``like``'s device and dtype (gradients kept)."""
    value = torch.as_tensor(value, device=like.device, dtype=like.dtype)
    return value.expand(rows) if value.dim() == 0 else value


def _weights(z: Tensor, weight: Tensor | None) -> Tensor:
    return torch.ones_like(z) if weight is None else weight.to(z.dtype)


@torch.no_grad()
def sigmoid_topk_shift(z: Tensor, k: float | Tensor, weight: Tensor | None = None) -> Tensor:
    """The root t* of sum_i w_i sigmoid(z_i + t) = k per row, by bisection in float64 (no gradient).

    Args:
        z: (B, N) logits.
        k: the budget, a float or (B,), with 0 < k < sum_i w_i.
        weight: (B, N) non-negative weights (bool = a validity mask), or None for all ones.

    Returns:
        (B,) float64 shifts.
    """
    w = _weights(z, weight).double()
    zz = z.double()
    live = w > 0
    total = w.sum(dim=1)
    kk = _as_rows(k, z.shape[0], total)
    ratio = (kk / total.clamp_min(torch.finfo(torch.float64).tiny)).clamp(1e-300, 1.0 - 1e-16)
    base = torch.log(ratio) - torch.log1p(-ratio)  # logit(k / W)
    lo = base - torch.where(live, zz, -torch.inf).amax(dim=1)
    hi = base - torch.where(live, zz, torch.inf).amin(dim=1)
    for _ in range(BISECTION_STEPS):  # fixed count: no host sync, the same cost for every row
        mid = 0.5 * (lo + hi)
        below = (w * torch.sigmoid(zz + mid[:, None])).sum(dim=1) < kk
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def sigmoid_topk(z: Tensor, k: float | Tensor, weight: Tensor | None = None) -> Tensor:
    """Soft top-k: y = sigmoid(z + t) with sum_i w_i y_i = k, differentiable with the exact implicit gradient.

    Args:
        z: (B, N) logits (larger = more likely kept); any scale.
        k: budget, a float or (B,) tensor with 0 < k < sum_i w_i; need not be an integer; may carry a gradient.
        weight: (B, N) non-negative weights or a bool validity mask; None = all ones.

    Returns:
        (B, N) values in [0, 1] (0 where the weight is 0) with sum_i w_i y_i = k per row.
    """
    w = _weights(z, weight)
    live = w > 0
    t_star = sigmoid_topk_shift(z.detach(), k if not isinstance(k, Tensor) else k.detach(),
                                None if weight is None else w.detach()).to(z.dtype)
    y_star = torch.sigmoid(z + t_star[:, None])
    slope = (w * y_star * (1.0 - y_star)).sum(dim=1).clamp_min(torch.finfo(z.dtype).tiny)
    kk = _as_rows(k, z.shape[0], z)
    # One differentiable Newton step: value t* (residual ~0), Jacobian = the implicit one (module docstring).
    t = t_star - ((w * y_star).sum(dim=1) - kk) / slope.detach()
    return torch.where(live, torch.sigmoid(z + t[:, None]), 0.0)
