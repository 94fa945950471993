"""What the frozen LM's loss says about each visual token: the gradient of the answer NLL on a per-token keep gate.

A trainable selector learns which tokens to keep only through dL/dg, the LM loss's gradient on its gate values g.
:func:`gate_saliency` measures that signal directly, with no selector: every visual token is gated at the same
value g0 and the saliency of token i is -dL/dg_i (positive: keeping more of it lowers the answer's NLL). Selecting
the top-K tokens by saliency, and comparing with random and the evidence oracle at the same K, tells whether the
LM loss *could* teach a selector where the answer is (``jobs/bench_gradient_signal.py``). The saliency reads the
answer, so it is a measurement, not a method.

Two gates, as in StepPrune's training path (:mod:`stepprune.selector.gate`):

* ``"attention"``: the raw tokens, log(g + 1e-6) added to every query's attention logit to each visual key;
* ``"noise"``: the VP noise gate of Eq. (13), sqrt(g) x + sqrt(1 - g) eps on the pre-projector features, with eps
  at the features' own RMS (no denoiser: it is part of the trained selector).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.types import PromptBatch, VisionFeatures, VisualTokens
from stepprune.selector.gate import attention_gate, vp_noise_gate


def gate_saliency(adapter: BackboneAdapter, prompt: PromptBatch, g0: float, gate: str = "attention",
                  generator: torch.Generator | None = None, padding: float = 0.0,
                  vision: VisionFeatures | None = None) -> Tensor:
    """-dL/dg at g = g0 for every visual token of every sample.

    Args:
        adapter: the frozen backbone.
        prompt: a batch with answers (labels), e.g. from ``adapter.prepare_conversations``.
        g0: the uniform gate value in (0, 1] the gradient is taken at.
        gate: ``"attention"`` or ``"noise"`` (module docstring).
        generator: the noise draw's generator (``"noise"`` only).
        padding: the value of padding rows (``-inf`` keeps them out of a top-K).
        vision: the tower's features of this prompt's images, when the caller already has them (the frozen tower
            does not depend on the text); None runs the tower.

    Returns:
        (B, N) fp32 saliency; each sample's own answer NLL (its mean over its answer tokens) is differentiated,
        so a sample's row does not depend on the rest of the batch. Padding rows (beyond a sample's tokens) are
        ``padding``.
    """
    if not 0.0 < g0 <= 1.0:
        raise ValueError(f"g0 must be in (0, 1], got {g0}")
    if gate not in ("attention", "noise"):
        raise ValueError(f"gate must be 'attention' or 'noise', got {gate!r}")
    if vision is None:
        with torch.no_grad():
            vision = adapter.vision_features(prompt)
    x = vision.tokens
    B, N = vision.token_mask.shape
    g = torch.full((B, N), float(g0), dtype=torch.float32, device=x.device, requires_grad=True)
    if gate == "attention":
        visual, biases = adapter.keep_all(vision), [attention_gate(g)]
    else:
        mask = vision.token_mask[..., None].to(x.dtype)
        rms = ((x.float() ** 2 * mask).sum() / (mask.sum() * x.shape[-1])).sqrt()
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32) * rms
        gated = vp_noise_gate(x.float(), g, eps)
        index = torch.arange(N, device=x.device)[None].expand(B, -1)
        visual, biases = VisualTokens(adapter.project(gated.to(x.dtype)), index, vision.num_tokens.clone()), []
    inputs = adapter.splice(prompt, visual, vision, "original")
    loss = adapter.lm_loss(adapter.forward(inputs, biases=biases), per_sample=True).sum()
    (grad,) = torch.autograd.grad(loss, g)
    return torch.where(vision.token_mask, -grad, padding)


def auc(score: Tensor, positive: Tensor) -> float | None:
    """Area under the ROC curve of ``score`` (1-D) separating ``positive`` (bool) from the rest: the share of
    (positive, negative) pairs the score orders correctly, ties counting half; None when either class is empty."""
    pos, neg = score[positive].double(), score[~positive].double()
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
