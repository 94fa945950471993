"""The variance-preserving noise gate, Eq. (13), the running-RMS noise scale it draws its noise with, and the
attention gate (an ablation, not in the spec).

    x~_i = sqrt(g_i) x_i + sqrt(1 - g_i) eps_i,     eps_i ~ N(0, sigma_n^2 I), fresh every forward pass.

* The gate acts on the pre-projector visual tokens. For Qwen2.5-VL a token row is the 4 pre-merger patch features
  of one merged token concatenated, so one g per row is exactly "a shared g over the 4 patch features".
* **Noise scale** (Sec. 12 item 5). ``"global"`` (default): sigma_n^2 is an EMA over training batches of the
  per-element mean square of the valid tokens (detached), so E||eps||^2 = E||x||^2 and the second moment is
  preserved for any g. ``"token"``: each token's own mean square (leaks one scalar of content through the noise).
* **Clamping.** d sqrt(g)/dg and d sqrt(1-g)/dg blow up at g in {0, 1}, which a sharp SoftTopK reaches in fp32.
  The gradient path uses g clamped to [c, 1 - c]; the forward *values* use the unclamped g (the difference is added
  detached), so g = 1 is exactly the identity and g = 0 exactly the noise.

**Attention gate** (``StepPruneConfig.gate = "attention"``): instead of noising token i, every query's attention
logit to visual key i gets log(g_i + floor) in every LLM layer, which scales that key's unnormalised attention
weight by g_i. The LLM sees the raw tokens; g = 1 is the token as is and g = 0 hides it from every other slot (up
to the floor), so at a hard g the training forward is the inference forward (original positions) and there is no
noise for a denoiser to learn a content-free fill from. This is the attention masking DynamicViT trains its token
pruning with. Its straight-through hard form (:func:`straight_through`, at :data:`HARD_FLOOR`) trains on the
inference forward and still gives every left-out token a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stepprune.backbones.hooks import AttentionBias
from stepprune.backbones.types import VISUAL

ATTENTION_FLOOR = 1e-6  # g = 0 still scales a key by 1e-6: a finite log keeps every softmax row and gradient finite
# The straight-through hard gate's floor. Where a trained LLM's attention logits to visual keys spread over more
# than ln(1e6) = 14, a left-out key with a high logit outweighs kept keys with low ones at a 1e-6 floor; a selector
# trained through that floor on the committed backbone learned to keep bland background and let the floored tokens
# through (measurements: docs/results/selector_training.md). At 1e-20 (a bias of -46) no such spread lets a key through, and the ~1e-20
# weights, whose gradient times 1 / floor is the left-out token's first-order effect, are normal fp32 numbers
# (tested on CPU in fp32; not yet on a GPU in bf16).
HARD_FLOOR = 1e-20


def _sqrt_bounded_grad(v: Tensor, clamp: float) -> Tensor:
    """sqrt(v) for v in [0, 1] whose gradient is that of sqrt(clamp(v, c, 1 - c)) (zero outside)."""
    exact = v.clamp(0.0, 1.0).sqrt()
    if clamp <= 0.0:
        return exact
    soft = v.clamp(clamp, 1.0 - clamp).sqrt()
    return soft + (exact - soft).detach()


def vp_noise_gate(x: Tensor, g: Tensor, noise: Tensor, clamp: float = 1e-4) -> Tensor:
    """Eq. (13) for given noise: sqrt(g) x + sqrt(1 - g) noise.

    Args:
        x: (B, N, d) visual tokens.
        g: (B, N) keep values in [0, 1] (one per token, shared over its d features).
        noise: (B, N, d) the noise eps, already at its scale sigma_n.
        clamp: g is clamped to [clamp, 1 - clamp] on the gradient path only (values stay exact).

    Returns:
        (B, N, d) gated tokens in x's dtype.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)  # at least fp32 for the square roots near 0 and 1
    g = g.to(dtype)
    keep = _sqrt_bounded_grad(g, clamp)[..., None]
    drop = _sqrt_bounded_grad(1.0 - g, clamp)[..., None]
    return (keep * x.to(dtype) + drop * noise.to(dtype)).to(x.dtype)


class NoiseScale(nn.Module):
    """The noise std sigma_n of Eq. (13): a running mean square of the visual features (buffers, no parameters).

    Args:
        mode: ``"global"`` (EMA of the batch mean square) or ``"token"`` (each token's own mean square).
        momentum: EMA momentum of the global estimate (the first batch initialises it).
    """

    def __init__(self, mode: str = "global", momentum: float = 0.99):
        super().__init__()
        self.mode = mode
        self.momentum = momentum
        self.register_buffer("mean_square", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, x: Tensor, mask: Tensor) -> None:
        """Folds one batch into the running mean square (no host sync).

        Args:
            x: (B, N, d) features; mask: (B, N) valid tokens.
        """
        w = mask.to(torch.float32)
        batch = (x.float().pow(2).mean(dim=-1) * w).sum() / w.sum().clamp_min(1.0)
        ema = self.momentum * self.mean_square + (1.0 - self.momentum) * batch
        self.mean_square.copy_(torch.where(self.seen, ema, batch))
        self.seen.fill_(True)

    def std(self, x: Tensor) -> Tensor:
        """sigma_n, broadcastable to x: () for ``"global"``, (B, N, 1) for ``"token"`` (detached)."""
        if self.mode == "token":
            return x.detach().float().pow(2).mean(dim=-1, keepdim=True).sqrt()
        return self.mean_square.sqrt()

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Fresh noise eps ~ N(0, sigma_n^2 I) shaped like x (float32)."""
        eps = torch.randn(x.shape, device=x.device, dtype=torch.float32, generator=generator)
        return eps * self.std(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, momentum={self.momentum}"


def straight_through(hard: Tensor, g: Tensor) -> Tensor:
    """The hard selection's values with the soft g's gradient: hard + g - sg(g).

    Under :func:`attention_gate` (with ``floor=HARD_FLOOR``) this sits on g, not on log g: a left-out token's bias
    is log(floor), its attention weight ~floor, and d log(g + floor) / dg = 1 / floor at g = 0, so its gradient is
    finite and equal to the first-order effect of letting it in, while the forward is the hard selection's.

    Args:
        hard: (B, N) bool or 0/1, the selection inference keeps; g: (B, N) soft keep values (differentiable).
    """
    return hard.to(g.dtype) + g - g.detach()


def attention_gate(g: Tensor, floor: float = ATTENTION_FLOOR) -> AttentionBias:
    """The attention gate: a bias of log(g_i + floor) on visual key i, for every query and every LLM layer.

    Args:
        g: (B, N) keep values in [0, 1] over the unpruned visual tokens (differentiable).
        floor: added to g inside the log (g = 0 then scales the key's weight by ``floor``).

    Returns:
        A ``per_key`` :class:`~stepprune.backbones.hooks.AttentionBias` from layer 0 whose bias is (B, L) over the
        slots of the spliced sequence: log(g + floor) at visual slots (by their ``visual_index``), 0 elsewhere, the
        same for every query (carried in the keys to SDPA's flash kernel).
    """
    log_w = torch.log(g.float() + floor)
    N = g.shape[1]

    def bias(ctx) -> Tensor:
        st = ctx.state
        visual = (st.segment == VISUAL) & st.valid
        column = torch.gather(log_w, 1, st.visual_index.clamp(0, N - 1).long())
        return torch.where(visual, column, 0.0).to(st.hidden.dtype)  # (B, L)

    return AttentionBias(0, bias, per_key=True)
