"""The selector's own training signal: dL/dg at its g (checked against a finite difference), the token classes and
the concentration helper."""

import pytest
import torch

import stepprune
from stepprune.selection_gradient import CLASSES, concentration, gate_gradient, gradient_classes
from stepprune.selector.gate import attention_gate
from tests.conftest import make_images
from tests.stepprune.selector.conftest import SMALL

pytestmark = pytest.mark.usefixtures("one_thread")


def _vlm(llava, **cfg):
    torch.manual_seed(0)
    method = stepprune.build_method("stepprune", {**SMALL, "k_max": 4, **cfg}).bind(llava)
    vlm = stepprune.PrunedVLM(llava, method, loss_per="question")
    vlm.method.train()
    return vlm


def _prompt(llava):
    return llava.prepare(make_images(2), ["What color is the square?", "How many objects?"], ["red", "three"])


def test_gate_gradient_is_the_answer_nll_gradient_on_g(llava):
    vlm = _vlm(llava, gate="attention")
    prompt = _prompt(llava)
    g, grad, hard = gate_gradient(vlm, prompt, 10 ** 9)
    N = int(llava.vision_features(prompt).num_tokens[0])
    assert g.shape == grad.shape == hard.shape == (2, N) and float(grad.abs().max()) > 0
    assert hard.sum(1).tolist() == vlm.method.last_diagnostics["count"].tolist()
    assert "polarise" not in vars(vlm.method)  # the capture is undone
    assert all(p.grad is None for p in vlm.method.parameters())  # parameter gradients untouched
    # finite difference of the soft attention gate's loss on the token with the largest gradient
    vision = llava.vision_features(prompt)
    inputs = llava.splice(prompt, llava.keep_all(vision), vision, "original")

    def loss(gate):
        return float(llava.lm_loss(llava.forward(inputs, biases=[attention_gate(gate)]), loss_per="question"))

    i = int(grad[0].abs().argmax())
    h = min(1e-3 / float(grad[0, i].abs()), 0.5 * float(g[0, i]))  # a loss change well above fp32 rounding
    up, down = g.clone(), g.clone()
    up[0, i] += h
    down[0, i] -= h
    fd = (loss(up) - loss(down)) / (2 * h)
    assert fd == pytest.approx(float(grad[0, i]), rel=0.05)


def test_gate_gradient_needs_soft_keep_values(llava):
    vlm = stepprune.PrunedVLM(llava, stepprune.build_method("random", budget=4))
    with pytest.raises(TypeError, match="no soft keep values"):
        gate_gradient(vlm, _prompt(llava), 0)


def test_gradient_classes_sort_every_token():
    grad = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    hard = torch.tensor([[True, True, True, False, False, False]])
    out = gradient_classes(grad, hard, evidence=[[0, 3]], distractors=[{1, 4}])
    assert set(out) == set(CLASSES)
    assert out["kept evidence"] == [1.0] and out["kept distractor"] == [2.0] and out["kept background"] == [3.0]
    assert out["left-out evidence"] == [4.0] and out["left-out distractor"] == [5.0]
    assert out["left-out background"] == [6.0]


def test_concentration():
    assert concentration([100.0] + [1.0] * 99) == pytest.approx(100 / 199)  # top 1 % of 100 is one value
    assert concentration([-3.0, 1.0], top=0.5) == pytest.approx(0.75)  # magnitudes
    assert concentration([]) == 0.0 and concentration([0.0, 0.0]) == 0.0
