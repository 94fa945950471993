"""Integration: the StepPrune selector trains end to end through the frozen tiny random LLaVA on CPU.

100 AdamW steps on the method's parameters (loss = adapter.lm_loss(...) + out.aux_loss) lower the LM loss, and a
larger length weight lambda ends with a smaller mean K than a smaller one.
"""

import numpy as np
import pytest
import torch

import stepprune

STEPS = 100


def _train(adapter, ctx, lam: float) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    method = stepprune.build_method("stepprune", d=32, heads=4, k_max=32, total_steps=STEPS, lambda_=lam,
                                    beta_anneal_steps=50).bind(adapter)
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    lm_losses, counts = [], []
    for step in range(STEPS):
        out = method.train_forward(ctx, step)
        lm = adapter.lm_loss(adapter.forward(adapter.splice(ctx.prompt, out.visual, ctx.vision)))
        (lm + out.aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        lm_losses.append(float(lm.detach()))
        counts.append(float(out.metrics["K_mean"]))
    return lm_losses, counts


@pytest.fixture(scope="module")
def runs(llava, make_batch, make_context, single_thread):
    with single_thread():
        ctx = make_context(llava, make_batch(llava, 4))
        return {lam: _train(llava, ctx, lam) for lam in (0.1, 10.0)}


@pytest.mark.slow
def test_training_lowers_the_lm_loss(runs):
    losses, _ = runs[0.1]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first - 0.05, (first, last)


@pytest.mark.slow
def test_a_larger_lambda_keeps_fewer_tokens(runs):
    _, small = runs[0.1]
    _, large = runs[10.0]
    assert small[0] == large[0] == 32.0  # both start long (K = K_max at initialisation)
    assert np.mean(large[-10:]) < np.mean(small[-10:]) - 5, (np.mean(large[-10:]), np.mean(small[-10:]))
