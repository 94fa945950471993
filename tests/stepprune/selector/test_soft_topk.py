"""SoftTopK, Eq. (12): sums, range, agreement with the Sinkhorn reference, implicit gradient, limits."""

import pytest
import torch

import stepprune
from stepprune.selector.soft_topk import soft_topk, soft_topk_sinkhorn, soft_topk_threshold


def _scores(B=3, n=576, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, n, generator=g, dtype=dtype)


def test_public_name_is_the_closed_form():
    assert stepprune.soft_topk is soft_topk


@pytest.mark.parametrize("beta", [0.5, 0.1, 0.02])
def test_rows_sum_to_k_and_values_in_open_unit_interval(beta):
    x = _scores(dtype=torch.float32)
    k = torch.tensor([64.3, 10.0, 300.0])
    g = soft_topk(x, k, beta)
    assert g.shape == x.shape
    torch.testing.assert_close(g.sum(dim=1), k, rtol=0, atol=1e-3)
    assert bool(((g >= 0) & (g <= 1)).all())
    if beta >= 0.1:  # strictly inside at moderate sharpness (fp32 saturates only for very sharp beta)
        assert bool(((g > 0) & (g < 1)).all())


def test_scalar_budget_broadcasts():
    x = _scores()
    g = soft_topk(x, 17.5, 0.1)
    torch.testing.assert_close(g.sum(dim=1), torch.full((3,), 17.5, dtype=torch.float64))


@pytest.mark.parametrize("beta", [0.5, 0.1, 0.05])
@pytest.mark.parametrize("k", [1.0, 64.3, 500.0])
def test_closed_form_agrees_with_log_sinkhorn(beta, k):
    x = _scores(B=2, seed=1)
    closed = soft_topk(x, k, beta)
    reference = soft_topk_sinkhorn(x, k, beta, iters=300)
    assert (closed - reference).abs().max() < 1e-5
    # The fp32 closed form (the training path) is within 1e-5 of the fp64 reference too.
    assert (soft_topk(x.float(), k, beta).double() - reference).abs().max() < 1e-5


def test_masked_rows_agree_with_sinkhorn_and_ignore_padding():
    x = _scores(B=2, n=50, seed=2)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 30:] = False
    k = torch.tensor([10.0, 7.5], dtype=torch.float64)
    g = soft_topk(x, k, 0.1, mask)
    ref = soft_topk_sinkhorn(x, k, 0.1, mask, iters=300)
    assert (g - ref).abs().max() < 1e-5
    assert bool((g[1, 30:] == 0).all())
    torch.testing.assert_close(g.sum(dim=1), k)
    # The padded row equals the same scores without the padding.
    alone = soft_topk(x[1:, :30], 7.5, 0.1)
    torch.testing.assert_close(g[1:, :30], alone)


def test_implicit_gradient_matches_finite_differences():
    x = _scores(B=2, n=12, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: soft_topk(v, 4.3, 0.1), (x,), eps=1e-6, atol=1e-6)


def test_jacobian_equals_the_implicit_function_formula():
    x = _scores(B=1, n=10, seed=4)
    beta = 0.2
    jac = torch.autograd.functional.jacobian(lambda v: soft_topk(v, 3.0, beta), x)[0, :, 0, :]
    g = soft_topk(x, 3.0, beta)[0]
    sp = g * (1 - g)
    expected = (2 / beta) * (torch.diag(sp) - torch.outer(sp, sp) / sp.sum())
    torch.testing.assert_close(jac, expected, rtol=1e-8, atol=1e-10)
    # ... and the unrolled Sinkhorn's autograd converges to the same Jacobian.
    jac_ref = torch.autograd.functional.jacobian(lambda v: soft_topk_sinkhorn(v, 3.0, beta, iters=500), x)[0, :, 0]
    torch.testing.assert_close(jac, jac_ref, rtol=1e-5, atol=1e-6)


def test_newton_step_keeps_the_bisection_value():
    x = _scores(B=2, n=100, seed=5)
    b = soft_topk_threshold(x, 20.0, 0.05)
    plain = torch.sigmoid((2 * x - 1 + b[:, None]) / 0.05)
    torch.testing.assert_close(soft_topk(x, 20.0, 0.05), plain, rtol=0, atol=1e-12)


def test_small_beta_gives_the_hard_top_k():
    x = torch.randperm(200, generator=torch.Generator().manual_seed(6)).double()[None] / 199.0  # distinct, in [0, 1]
    for k in (1, 17, 150):
        g = soft_topk(x, float(k), 1e-4)
        hard = torch.zeros_like(x)
        hard[0, x[0].topk(k).indices] = 1.0
        assert (g - hard).abs().max() < 1e-3


def test_large_beta_gives_uniform_k_over_n():
    x = _scores(B=1, n=40)
    g = soft_topk(x, 8.0, 1e4)
    torch.testing.assert_close(g, torch.full_like(g, 0.2), rtol=0, atol=1e-4)
