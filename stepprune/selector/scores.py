"""Alive probabilities (Eq. 10), aggregated soft scores (Eq. 11, with the Table 4b variants) and the expected
count K^ of Eq. (15), all along the realised (argmax) trajectory.

Conventions: p is (B, T, N+1), the per-step pointer probabilities p_t over the N image slots plus the stop slot,
with every step after a sample's episode end already zeroed (finished samples run on in lock-step; their later
steps must not count). ``stop_index`` is the stop slot's index in the last dimension (StepPrune puts it last,
index N). Sec. 12 item 3: the sums run over the realised steps t <= T_ep only (no continued rollout).

Table 4b variants (``mode``), with a_t the alive probability and t_i the last step at which image slot i was still
selectable (its own selection step if chosen, else the episode's last step):

* ``"full"``      s_i = sum_t gamma^(t-1) a_t p_t(i)                       (Eq. 11; paper 94.7)
* ``"alive"``     s_i = sum_t a_t p_t(i)            (gamma = 1, a_t kept;   paper 89.5)
* ``"uniform"``   s_i = sum_t p_t(i)                (a_t and gamma dropped; paper 83.9)
* ``"last_step"`` s_i = p_{t_i}(i)                  (one step's pointer only; paper 90.3). Read literally, "the
  last step's pointer" p_{T_ep} is 0 on every selected slot (they are masked by then); we therefore take each
  slot's own last selectable step, i.e. the last step with p_t(i) > 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCORE_MODES = ("full", "last_step", "uniform", "alive")


def _drop_slot(x: Tensor, index: int) -> Tensor:
    """Removes column ``index`` of the last dimension."""
    n = x.shape[-1]
    index = index % n
    return torch.cat([x[..., :index], x[..., index + 1:]], dim=-1)


def log_survival(logits: Tensor, stop_index: int, tau: float = 1.0) -> Tensor:
    """log(1 - p_t(STOP)) computed stably from the (masked) logits, without forming 1 - p.

    log(1 - p(STOP)) = LSE_{j != STOP}(l_j / tau) - LSE_j(l_j / tau).

    Args:
        logits: (B, T, N+1) pointer logits with the log-space mask already added.
        stop_index: the stop slot's index in the last dimension.
        tau: softmax temperature.

    Returns:
        (B, T) log survival per step (0 where the stop slot is masked).
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) / tau  # at least fp32 (spec: fp32 logits)
    return torch.logsumexp(_drop_slot(z, stop_index), dim=-1) - torch.logsumexp(z, dim=-1)


def alive_probabilities(log_surv: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. (10): a_t = prod_{t' < t} (1 - p_t'(STOP)), a_1 = 1, in log space.

    Args:
        log_surv: (B, T) log(1 - p_t(STOP)).
        valid: (B, T) bool/float, 1 for the steps each sample actually executed (t <= T_ep).

    Returns:
        a: (B, T) alive probability entering each step (a_1 = 1; non-increasing).
        a_next: (B, T) a_{t+1} = a_t (1 - p_t(STOP)), the survival after each step. Steps with valid = 0 leave
            both unchanged; :func:`expected_count` drops them.
    """
    inclusive = torch.cumsum(log_surv * valid.to(log_surv.dtype), dim=1)
    exclusive = inclusive - log_surv * valid.to(log_surv.dtype)
    return exclusive.exp(), inclusive.exp()


def expected_count(a_next: Tensor, valid: Tensor) -> Tensor:
    """K^ = sum_{t <= T_ep} a_{t+1}: the expected number of selections within the realised horizon, (B,)."""
    return (a_next * valid.to(a_next.dtype)).sum(dim=1)


def aggregate_scores(
    p: Tensor,
    stop_index: int,
    gamma: float,
    mode: str = "full",
    alive: Tensor | None = None,
) -> Tensor:
    """Eq. (11): per-token soft scores from the per-step pointer distributions (and its Table 4b variants).

    Args:
        p: (B, T, N+1) per-step pointer probabilities with the steps after each sample's end zeroed.
        stop_index: index of the stop slot in the last dimension of ``p`` (StepPrune: N, the last slot). It is
            excluded from the output and its probabilities define a_t.
        gamma: geometric decay (used by ``"full"`` only).
        mode: ``"full"``, ``"alive"``, ``"uniform"`` or ``"last_step"`` (see the module docstring).
        alive: optional (B, T) precomputed a_t (e.g. from :func:`log_survival` in log space). When None it is
            the exclusive cumulative product of 1 - p[..., stop_index] (zeroed steps leave it unchanged).

    Returns:
        (B, N) scores of the image slots, in slot order with the stop slot removed.
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; choose one of {SCORE_MODES}")
    img = _drop_slot(p, stop_index)  # (B, T, N)
    T = p.shape[1]
    if mode == "uniform":
        return img.sum(dim=1)
    if mode == "last_step":
        steps = torch.arange(1, T + 1, device=p.device)
        last = torch.where(img > 0, steps[None, :, None], 0).amax(dim=1)  # (B, N), 0 = never selectable
        picked = img.gather(1, (last - 1).clamp(min=0)[:, None, :]).squeeze(1)
        return torch.where(last > 0, picked, 0.0)
    if alive is None:
        surv = 1.0 - p[..., stop_index]
        alive = torch.cat([torch.ones_like(surv[:, :1]), torch.cumprod(surv, dim=1)[:, :-1]], dim=1)
    weight = alive.to(img.dtype)
    if mode == "full":
        weight = weight * gamma ** torch.arange(T, device=p.device, dtype=img.dtype)[None]
    return (weight[:, :, None] * img).sum(dim=1)
