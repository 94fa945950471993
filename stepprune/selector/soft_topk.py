"""SoftTopK, Eq. (12): entropic optimal transport of N scores onto the two anchors {0, 1} (Xie et al. 2020).

Problem (top-k = the largest entries), for x in [0, 1]^n, budget 0 < k < n and entropic weight beta:

    cost C_ij = (x_i - y_j)^2 with anchors y = (0, 1);  marginals mu = 1/n, nu = ((n - k)/n, k/n);
    Gamma* = argmin <C, Gamma> + beta * sum Gamma (log Gamma - 1);   output_i = n * Gamma*_{i,1}.

Two implementations that agree to 1e-5 (to ~1e-12 in float64; tested):

* :func:`soft_topk` — the exact closed form. With two anchors and exact row marginals,
  n Gamma_i1 = sigmoid((2 x_i - 1 + b) / beta) where the scalar b solves sum_i sigmoid(...) = k. That is the
  shared solver :func:`stepprune.methods.sigmoid_topk.sigmoid_topk` on the logits z = (2x - 1) / beta with shift
  t = b / beta: bisection in float64 without gradient, then one *differentiable* Newton step whose value is the
  root and whose Jacobian is exactly the implicit-function-theorem one,
  d g_i / d x_j = (2/beta) (sigma'_i delta_ij - sigma'_i sigma'_j / sum_l sigma'_l).
* :func:`soft_topk_sinkhorn` — the log-domain Sinkhorn reference (autograd through the unrolled loop).

Both accept a (B, N) ``mask`` of valid entries (variable N per row, Qwen2.5-VL); masked entries output 0 and
n = the row's valid count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stepprune.methods.sigmoid_topk import sigmoid_topk, sigmoid_topk_shift


def _budget(k: float | Tensor, rows: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """k as a (B,) tensor."""
    k = torch.as_tensor(k, device=device, dtype=dtype)
    return k.expand(rows) if k.dim() == 0 else k


def _mask(x: Tensor, mask: Tensor | None) -> Tensor:
    return torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()


@torch.no_grad()
def soft_topk_threshold(x: Tensor, k: float | Tensor, beta: float, mask: Tensor | None = None) -> Tensor:
    """The root b* of sum_i sigmoid((2 x_i - 1 + b) / beta) = k, per row, by bisection in float64.

    Args:
        x: (B, N) scores in [0, 1].
        k: budget, a float or (B,), with 0 < k < n (n = valid entries of the row).
        beta: entropic weight (> 0).
        mask: (B, N) valid entries, or None.

    Returns:
        (B,) float64 thresholds (beta times the shared solver's shift).
    """
    return beta * sigmoid_topk_shift((2.0 * x.double() - 1.0) / beta, k, _mask(x, mask))


def soft_topk(x: Tensor, k: float | Tensor, beta: float, mask: Tensor | None = None) -> Tensor:
    """Soft top-k of the largest entries of each row, Eq. (12), in exact closed form.

    Args:
        x: (B, N) scores already scaled to [0, 1] (StepPrune divides s by its detached row maximum).
        k: budget, a float or a (B,) tensor, 0 < k < n; need not be an integer. StepPrune passes a constant
            (k_bar); a k that carries a gradient gets its exact implicit one.
        beta: entropic weight (sharpness): beta -> 0 gives the hard indicator of the k largest entries (without
            ties), beta -> inf gives k/n everywhere.
        mask: optional (B, N) bool of valid entries; invalid ones output 0 and do not count in n.

    Returns:
        (B, N) values in (0, 1) (0 where masked) whose rows sum to k; differentiable in ``x`` with the exact
        implicit gradient.
    """
    return sigmoid_topk((2.0 * x - 1.0) / beta, k, _mask(x, mask))


def soft_topk_sinkhorn(
    x: Tensor,
    k: float | Tensor,
    beta: float,
    mask: Tensor | None = None,
    iters: int = 200,
    tol: float | None = None,
) -> Tensor:
    """Log-domain Sinkhorn reference of :func:`soft_topk` (the SOFT top-k of Xie et al., largest-k direction).

    Dual potentials f (B, N) and g (B, 2) start at 0 and alternate soft-min updates; a last f-update makes the
    rows exact so every output is in [0, 1]. No exp(-C/beta) kernel is formed, so small beta cannot underflow.

    Args:
        x, k, beta, mask: as in :func:`soft_topk`.
        iters: maximum Sinkhorn iterations.
        tol: stop early once every row's column-1 mass is within ``tol`` of k (checked every 10 iterations,
            a host sync: this is a reference, not the training path). None: always run ``iters``.

    Returns:
        (B, N) n * Gamma_{:, 1}; differentiable by autograd through the unrolled loop.
    """
    m = _mask(x, mask)
    B = x.shape[0]
    n = m.sum(dim=1).to(x.dtype)  # (B,)
    kk = _budget(k, B, x.device, x.dtype)
    anchors = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
    cost = (x[:, :, None] - anchors) ** 2  # (B, N, 2)
    log_mu = -torch.log(n)[:, None].expand_as(x)  # (B, N)
    log_nu = torch.stack([torch.log((n - kk) / n), torch.log(kk / n)], dim=1)  # (B, 2)
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    f = torch.zeros_like(x)
    g = torch.zeros(B, 2, dtype=x.dtype, device=x.device)

    def f_update(g: Tensor) -> Tensor:
        return beta * log_mu - beta * torch.logsumexp((g[:, None, :] - cost) / beta, dim=2)

    for it in range(iters):
        f = f_update(g)
        fc = torch.where(m[:, :, None], (f[:, :, None] - cost) / beta, neg_inf)
        g = beta * log_nu - beta * torch.logsumexp(fc, dim=1)
        if tol is not None and (it + 1) % 10 == 0:
            out = n[:, None] * torch.exp((f_update(g) + g[:, None, 1] - cost[..., 1]) / beta)
            if float((torch.where(m, out, 0.0).sum(dim=1) - kk).abs().max()) < tol:
                break
    f = f_update(g)
    out = n[:, None] * torch.exp((f + g[:, None, 1] - cost[..., 1]) / beta)
    return torch.where(m, out, 0.0)
