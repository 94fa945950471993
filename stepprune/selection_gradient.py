"""The signal a trained StepPrune selector learns from: the LM loss's gradient on its own keep values g.

:func:`stepprune.gate_saliency.gate_saliency` measures dL/dg at a uniform gate, with no selector. This module
measures it where training takes it: at the selector's own g and hard selection, under its own gate
(``gate="noise"`` or ``"attention"``, soft or straight-through hard). :func:`gate_gradient` returns g, dL/dg and the
hard selection; :func:`gradient_classes` splits dL/dg by what each token is (kept or left out; on the question's
evidence, on another question's evidence about the same image, or background) and :func:`concentration` says how
much of the total |dL/dg| a few tokens hold. ``jobs/bench_gate_gradient.py`` prints both for trained checkpoints.

Reads the answers (the gradient of their NLL), so it is a measurement of the training signal, not a method.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from stepprune.backbones.types import PromptBatch

CLASSES = ("kept evidence", "kept distractor", "kept background", "left-out evidence", "left-out distractor",
           "left-out background")


def gate_gradient(vlm, prompt: PromptBatch, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """The LM loss's gradient on StepPrune's soft keep values g, at the selector's own training forward.

    Args:
        vlm: a :class:`stepprune.PrunedVLM` whose method is StepPrune (it has ``polarise``), in train mode.
        prompt: a batch with answers (labels), e.g. from ``adapter.prepare_conversations``.
        step: the optimizer step the schedules (alpha, beta, lambda) are read at.

    Returns:
        g (B, N) fp32, dL/dg (B, N) fp32 of the answer NLL alone (the length term left out), and the hard selection
        (B, N) bool. The method's parameter gradients are left as they were.
    """
    method = vlm.method
    if not hasattr(method, "polarise"):
        raise TypeError(f"{type(method).__name__} has no soft keep values g to differentiate (StepPrune only)")
    captured: list[Tensor] = []
    polarise = method.polarise

    def keep(*args, **kwargs):
        g = polarise(*args, **kwargs)
        captured.append(g)
        return g

    method.polarise = keep  # an instance attribute shadows the bound method for this call only
    try:
        inputs, out = vlm.train_inputs(prompt, step)
        lm = vlm.adapter.lm_loss(vlm.adapter.forward(inputs, biases=out.biases), loss_per=vlm.loss_per)
    finally:
        del method.polarise
    (g,) = captured
    (grad,) = torch.autograd.grad(lm, g)
    picks = method.last_diagnostics["selection_order"]  # (B, T): the loop's picks, the stop slot N included
    hard = torch.zeros(g.shape[0], g.shape[1] + 1, dtype=torch.bool, device=g.device).scatter_(1, picks, True)
    return g.detach().float(), grad.float(), hard[:, :-1]


def gradient_classes(grad: Tensor, hard: Tensor, evidence: Sequence[Iterable[int]],
                     distractors: Sequence[Iterable[int]]) -> dict[str, list[float]]:
    """dL/dg of every token of a batch, grouped by :data:`CLASSES`.

    Args:
        grad, hard: (B, N) from :func:`gate_gradient`.
        evidence: per sample, the patch indices of the question's evidence.
        distractors: per sample, the patches of the other questions about the same image that are not evidence.
    """
    out: dict[str, list[float]] = {name: [] for name in CLASSES}
    for b in range(grad.shape[0]):
        kind = torch.zeros(grad.shape[1], dtype=torch.long)  # 0 background, 1 distractor, 2 evidence
        kind[sorted(set(distractors[b]))] = 1
        kind[sorted(set(evidence[b]))] = 2
        for i, (value, kept) in enumerate(zip(grad[b].tolist(), hard[b].tolist())):
            name = ("kept " if kept else "left-out ") + ("background", "distractor", "evidence")[int(kind[i])]
            out[name].append(value)
    return out


def concentration(values: Sequence[float], top: float = 0.01) -> float:
    """The share of the total |value| held by the ``top`` fraction of the largest |values| (at least one)."""
    mags = torch.tensor(values, dtype=torch.float64).abs().sort(descending=True).values
    if mags.numel() == 0 or float(mags.sum()) == 0.0:
        return 0.0
    n = max(1, int(top * mags.numel()))
    return float(mags[:n].sum() / mags.sum())
