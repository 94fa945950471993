"""Alive probabilities (Eq. 10), aggregated scores (Eq. 11) and the Table 4b variants, K^."""

import pytest
import torch

import stepprune
from stepprune.selector.scores import aggregate_scores, alive_probabilities, expected_count, log_survival


def _episode(B=2, T=5, N=6, seed=0):
    """Masked per-step logits/probabilities of a fake episode: each step masks the slot chosen before it, and
    sample 1 ends after 3 steps (its later steps zeroed)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, N + 1, generator=g, dtype=torch.float64)
    for b in range(B):
        for t in range(1, T):
            chosen = logits[b, t - 1, :N].argmax()
            logits[b, t:, chosen] = -1e9
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 3:] = False
    p = torch.softmax(logits, dim=-1) * valid[..., None]
    return logits, p, valid


def _loops(p, gamma, mode):
    """Eq. (11) and its variants written as plain loops (the specification)."""
    B, T, S = p.shape
    N = S - 1
    out = torch.zeros(B, N, dtype=p.dtype)
    for b in range(B):
        alive = 1.0
        for t in range(T):
            for i in range(N):
                if mode == "full":
                    out[b, i] += gamma**t * alive * p[b, t, i]
                elif mode == "alive":
                    out[b, i] += alive * p[b, t, i]
                elif mode == "uniform":
                    out[b, i] += p[b, t, i]
            alive = alive * (1 - p[b, t, N])
        if mode == "last_step":
            for i in range(N):
                last = [t for t in range(T) if p[b, t, i] > 0]
                out[b, i] = p[b, last[-1], i] if last else 0.0
    return out


def test_public_name():
    assert stepprune.aggregate_scores is aggregate_scores


@pytest.mark.parametrize("mode", ["full", "alive", "uniform", "last_step"])
def test_each_variant_matches_its_definition(mode):
    _, p, _ = _episode()
    torch.testing.assert_close(aggregate_scores(p, 6, 0.9, mode), _loops(p, 0.9, mode))


def test_the_four_variants_differ_as_specified():
    _, p, _ = _episode()
    full, alive = aggregate_scores(p, 6, 0.9, "full"), aggregate_scores(p, 6, 0.9, "alive")
    uniform, last = aggregate_scores(p, 6, 0.9, "uniform"), aggregate_scores(p, 6, 0.9, "last_step")
    for a, b in [(full, alive), (full, uniform), (full, last), (alive, uniform), (alive, last), (uniform, last)]:
        assert not torch.allclose(a, b)
    # gamma = 1 turns "full" into "alive"; a_t <= 1 and gamma < 1 make each term smaller than the plain sum.
    torch.testing.assert_close(aggregate_scores(p, 6, 1.0, "full"), alive)
    assert bool((full <= alive + 1e-12).all()) and bool((alive <= uniform + 1e-12).all())
    # last_step keeps one step's probability per token: never above the plain sum.
    assert bool((last <= uniform + 1e-12).all())
    with pytest.raises(ValueError, match="unknown score mode"):
        aggregate_scores(p, 6, 0.9, "mean")


def test_zeroed_steps_after_the_end_change_nothing():
    _, p, _ = _episode()
    padded = torch.cat([p, torch.zeros(2, 4, 7, dtype=p.dtype)], dim=1)
    for mode in ("full", "alive", "uniform", "last_step"):
        torch.testing.assert_close(aggregate_scores(padded, 6, 0.9, mode), aggregate_scores(p, 6, 0.9, mode))


def test_stop_index_names_the_stop_slot():
    _, p, _ = _episode()
    moved = torch.cat([p[..., 6:], p[..., :6]], dim=-1)  # stop slot first
    for mode in ("full", "alive", "uniform", "last_step"):
        torch.testing.assert_close(aggregate_scores(moved, 0, 0.9, mode), aggregate_scores(p, 6, 0.9, mode))


def test_alive_probabilities_start_at_one_and_never_increase():
    logits, p, valid = _episode()
    a, a_next = alive_probabilities(log_survival(logits, 6), valid)
    assert bool((a[:, 0] == 1).all())
    assert bool((a[:, 1:] <= a[:, :-1]).all())
    # log-space from the logits == the cumulative product of 1 - p(STOP) along the executed steps
    surv = torch.where(valid, 1 - p[..., 6], torch.ones_like(p[..., 6]))
    cum = torch.cumprod(surv, dim=1)
    torch.testing.assert_close(a_next, cum)
    torch.testing.assert_close(a[:, 1:], cum[:, :-1])
    # ... and the precomputed a_t gives the same scores as the in-function product
    torch.testing.assert_close(aggregate_scores(p, 6, 0.9, alive=a), aggregate_scores(p, 6, 0.9))


def test_expected_count_sums_survival_over_executed_steps():
    logits, p, valid = _episode()
    _, a_next = alive_probabilities(log_survival(logits, 6), valid)
    k_hat = expected_count(a_next, valid)
    torch.testing.assert_close(k_hat[1], a_next[1, :3].sum())
    torch.testing.assert_close(k_hat[0], a_next[0].sum())


def test_log_survival_is_zero_when_the_stop_slot_is_masked():
    logits = torch.randn(2, 3, 5)
    logits[..., 4] = -1e9
    assert bool((log_survival(logits, 4) == 0).all())
