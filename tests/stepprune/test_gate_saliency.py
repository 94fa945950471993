"""The gate saliency: -dL/dg at a uniform gate, checked against a finite difference, and the AUC helper."""

import pytest
import torch

from stepprune.gate_saliency import auc, gate_saliency
from stepprune.selector.gate import attention_gate
from tests.conftest import make_images


@pytest.mark.parametrize("gate", ["attention", "noise"])
def test_saliency_is_minus_the_gradient_of_each_samples_answer_nll(llava, gate, one_thread):
    prompt = llava.prepare(make_images(2), ["What color is the square?", "How many objects?"], ["red", "three"])
    sal = gate_saliency(llava, prompt, 0.5, gate, generator=torch.Generator().manual_seed(0))
    N = int(llava.vision_features(prompt).num_tokens[0])
    assert sal.shape == (2, N) and torch.isfinite(sal).all() and float(sal.abs().max()) > 0
    # the same draw again: deterministic; sample 1 alone: its own row (per-sample NLL, batch-independent)
    again = gate_saliency(llava, prompt, 0.5, gate, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, sal)
    if gate == "attention":  # finite difference on one token's gate: L(g0 + h e_i) - L(g0 - h e_i) = -2 h sal_i
        vision = llava.vision_features(prompt)
        inputs = llava.splice(prompt, llava.keep_all(vision), vision, "original")

        def loss(g):
            return float(llava.lm_loss(llava.forward(inputs, biases=[attention_gate(g)]), per_sample=True)[0])

        i, h = int(sal[0].abs().argmax()), 1e-3
        g = torch.full((2, N), 0.5, dtype=torch.float64)
        up, down = g.clone(), g.clone()
        up[0, i] += h
        down[0, i] -= h
        assert (loss(up.float()) - loss(down.float())) / (2 * h) == pytest.approx(-float(sal[0, i]), rel=0.1,
                                                                                    abs=1e-4)


def test_auc_counts_pairs_and_ties():
    positive = torch.tensor([True, False, False, True])
    assert auc(torch.tensor([3.0, 1.0, 2.0, 4.0]), positive) == 1.0
    assert auc(torch.tensor([0.0, 1.0, 2.0, -1.0]), positive) == 0.0
    assert auc(torch.tensor([1.0, 1.0, 1.0, 1.0]), positive) == 0.5
    assert auc(torch.tensor([2.0, 1.0, 3.0, 0.0]), positive) == 0.25  # 1 of the 4 (pos, neg) pairs ordered
    assert auc(torch.tensor([1.0, 2.0]), torch.tensor([False, False])) is None
    with pytest.raises(ValueError, match="g0"):
        gate_saliency(None, None, 0.0)


def test_padding_rows_take_the_given_value_and_valid_rows_do_not_change(qwen, one_thread):
    images = make_images(1, size=(96, 96)) + make_images(1, seed=1, size=(48, 48))  # variable token counts
    prompt = qwen.prepare(images, ["What color is it?", "How many?"], ["red", "two"])
    n = qwen.vision_features(prompt).num_tokens.tolist()
    assert n[1] < n[0]
    plain = gate_saliency(qwen, prompt, 0.5)
    masked = gate_saliency(qwen, prompt, 0.5, padding=float("-inf"))
    assert (plain[1, n[1]:] == 0).all() and (masked[1, n[1]:] == float("-inf")).all()
    assert torch.isfinite(masked[0]).all() and torch.isfinite(masked[1, :n[1]]).all()
    torch.testing.assert_close(masked[1, :n[1]], plain[1, :n[1]])
    torch.testing.assert_close(masked[0], plain[0])


def test_vision_rows_are_the_tower_on_those_images_alone(adapter):
    from tests.conftest import PROMPTS, make_images

    images = make_images(3, seed=8)
    whole = adapter.vision_features(adapter.prepare(images, PROMPTS[:3]))
    for index in ([2, 0], [1]):
        alone = adapter.vision_features(adapter.prepare([images[i] for i in index], [PROMPTS[i] for i in index]))
        cut = whole.rows(index)
        torch.testing.assert_close(cut.tokens, alone.tokens, rtol=1e-5, atol=1e-5)
        assert torch.equal(cut.num_tokens, alone.num_tokens) and torch.equal(cut.grid, alone.grid)
        if alone.cls is not None:
            torch.testing.assert_close(cut.cls, alone.cls, rtol=1e-5, atol=1e-5)
        # one image's own attention rows: the batch's padding is masked, so they agree on the real patches
        a, b = cut.attention(-1), alone.attention(-1)
        T = b.shape[-1]
        torch.testing.assert_close(a[..., :T, :T], b, rtol=1e-4, atol=1e-5)
