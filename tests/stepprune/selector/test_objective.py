"""Eq. (15): the straight-through length term, k_bar, and the alpha / beta / lambda schedules."""

import math

import pytest
import torch

from stepprune.selector.config import StepPruneConfig
from stepprune.selector.objective import RunningBudget, Schedules, length_term


def test_length_term_value_is_the_realised_ratio_and_gradient_that_of_k_hat():
    count = torch.tensor([10, 3])
    k_hat = torch.tensor([8.5, 4.2], requires_grad=True)
    n = torch.tensor([100, 50])
    term = length_term(count, k_hat, n)
    torch.testing.assert_close(term.detach(), torch.tensor([0.10, 0.06]))
    term.sum().backward()
    torch.testing.assert_close(k_hat.grad, torch.tensor([0.01, 0.02]))


def test_schedules():
    s = Schedules(StepPruneConfig(total_steps=1000, alpha_start=0.0, alpha_warmup_frac=0.1, beta_start=0.2,
                                  beta_end=0.02, beta_anneal_steps=2000, beta_anneal_frac=0.5, lambda_=0.3))
    assert s.alpha(0) == 0.0 and s.alpha(50) == pytest.approx(0.5) and s.alpha(100) == 1.0 and s.alpha(999) == 1.0
    # beta anneals over min(2000, 0.5 * 1000) = 500 steps, cosine
    assert s.beta(0) == pytest.approx(0.2) and s.beta(500) == pytest.approx(0.02) and s.beta(900) == pytest.approx(0.02)
    assert s.beta(250) == pytest.approx(0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert s.lam(0) == 0.3
    warm = Schedules(StepPruneConfig(total_steps=100, lambda_=1.0, lambda_delay_frac=0.05, lambda_ramp_frac=0.1))
    assert warm.lam(4) == 0.0 and warm.lam(10) == pytest.approx(0.5) and warm.lam(20) == 1.0
    started = Schedules(StepPruneConfig(total_steps=100, alpha_start=0.1))
    assert started.alpha(0) == pytest.approx(0.1)


def test_schedules_need_total_steps():
    with pytest.raises(ValueError, match="total_steps"):
        Schedules(StepPruneConfig()).alpha(0)


def test_running_budget_ema_and_clamp():
    kbar = RunningBudget(192, momentum=0.9)
    kbar.update(torch.tensor([50, 70]))
    torch.testing.assert_close(kbar.value, torch.tensor(0.9 * 192 + 0.1 * 60))
    n = torch.tensor([576, 100])
    torch.testing.assert_close(kbar.budget(n), torch.tensor([178.8, 99.0]))  # clamped to N_b - 1
    torch.testing.assert_close(kbar.budget(n, torch.tensor([0, 40])), torch.tensor([1.0, 40.0]))  # per-sample ablation
