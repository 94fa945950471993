"""The evidence warm start's pieces: the first pointer step's logits and L_ev."""

import pytest
import torch

from stepprune.selector.evidence_warm_start import evidence_loss, first_step_logits


def test_first_step_logits_cover_the_image_slots(llava, make_batch, make_context, small):
    import stepprune

    torch.manual_seed(0)
    method = stepprune.build_method("stepprune", small).bind(llava)
    ctx = make_context(llava, make_batch(llava, n=2))
    logits = first_step_logits(method, ctx)
    N = ctx.vision.token_mask.shape[1]
    assert logits.shape == (2, N) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    # learnable: a few steps on L_ev raise the first step's mass on a fixed "evidence" set
    evidence = [[0, 1, 2], [N - 1]]
    opt = torch.optim.AdamW(method.parameters(), lr=3e-3)
    before = float(evidence_loss(logits.detach(), evidence))
    for _ in range(10):
        loss = evidence_loss(first_step_logits(method, ctx), evidence)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(evidence_loss(first_step_logits(method, ctx), evidence))
    assert after < before - 0.1


def test_evidence_loss_is_minus_log_mass_on_the_evidence():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    loss = evidence_loss(logits, [[0, 1], [2, 2]])  # repeats count once
    assert float(loss) == pytest.approx(-(torch.log(torch.tensor(0.75)) + torch.log(torch.tensor(0.8))).item() / 2,
                                        rel=1e-6)


def test_evidence_loss_names_the_bad_sample():
    logits = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="sample 1 has no evidence"):
        evidence_loss(logits, [[0], []])
    with pytest.raises(ValueError, match="sample 0 has evidence index 9 outside its 4 slots"):
        evidence_loss(logits, [[9], [1]])
