"""An evidence-supervised warm start for StepPrune's selector: a diagnostic, not the method.

The spec trains the selector with the LM loss alone. On SynthVQA the evidence of every question is known (the patch
indices under what answers it), so the selector's encoder and pointer can also be trained directly to point at it:
cross-entropy of the *first* pointer step's distribution over the image slots against the question's evidence,

    L_ev = -log sum_{i in evidence} p_1(i),     p_1 = softmax over the N image slots (the stop slot left out),

with the question gate alpha at 1. Every later step reads the same memory, so a memory that singles out the evidence
steers the whole episode. Such a selector answers two questions the LM loss alone cannot: can this architecture
represent a selection that beats random (it needs labels to get there), and does the LM loss keep such a selection
once it is given one (``train.init_selector``; ``docs/results/selector_training.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from stepprune.methods.base import SelectionContext
from stepprune.selector.decoder import SelfAttentionCache

MASKED = -1e9  # a finite mask: the glimpse attention adds it to its logits, and a row of -inf would be NaN


def first_step_logits(method, ctx: SelectionContext) -> Tensor:
    """(B, N) fp32: the first pointer step's logits over the image slots (padding masked, the stop slot dropped).

    Args:
        method: a bound :class:`stepprune.selector.method.StepPrune`.
        ctx: the batch's selection context.
    """
    h_v, _, _ = method._encode(ctx, 1.0)
    mem = method.decoder.memory(h_v)
    B, N = h_v.shape[:2]
    t0 = torch.zeros((), dtype=torch.long, device=h_v.device)
    q = method.decoder.start_query(B, t0, h_v.dtype)
    bias = torch.zeros(B, N + 1, device=h_v.device)
    bias[:, :N] = bias[:, :N].masked_fill(~ctx.vision.token_mask, MASKED)
    bias[:, N] = MASKED  # the stop slot
    logits = method.decoder.step(q, t0, SelfAttentionCache.growing(method.decoder.num_layers), mem, bias)
    return logits[:, :N].float()


def evidence_loss(logits: Tensor, evidence: Sequence[Iterable[int]]) -> Tensor:
    """L_ev averaged over the batch (0-dim): -log of the first step's probability mass on each sample's evidence.

    Args:
        logits: (B, N) from :func:`first_step_logits`.
        evidence: per sample, its evidence patch indices (at least one each).

    Raises:
        ValueError: naming the sample without evidence or with an index beyond its N slots.
    """
    on = torch.zeros_like(logits, dtype=torch.bool)
    for b, idx in enumerate(evidence):
        idx = sorted(set(int(i) for i in idx))
        if not idx:
            raise ValueError(f"evidence warm start: sample {b} has no evidence patches")
        if idx[0] < 0 or idx[-1] >= logits.shape[1]:
            raise ValueError(f"evidence warm start: sample {b} has evidence index {idx[-1]} outside its "
                             f"{logits.shape[1]} slots")
        on[b, idx] = True
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~on, float("-inf")), 1)).mean()
