"""Plain data passed between a backbone adapter, the pruning methods and the language-model runner.

Shapes use B = batch, L = sequence slots, N = visual tokens per image (padded to the batch maximum for Qwen),
K = kept visual tokens, D = LLM width. One image per sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# Segment codes of a sequence slot: what the slot holds.
PAD, PREFIX, VISUAL, SUFFIX = 0, 1, 2, 3


@dataclasses.dataclass
class PromptBatch:
    """A tokenised batch of (image, prompt[, answer]) samples, as the backbone's own processor produced it.

    Attributes:
        input_ids: (B, L0) token ids with the image placeholder expanded to N_b image tokens per sample.
        attention_mask: (B, L0) 1 for real tokens (any padding side).
        pixel_inputs: the processor's image tensors (``pixel_values`` and, for Qwen, ``image_grid_thw``).
        positions: (B, L0) or (3, B, L0) position ids of the *unpruned* sequence, ignoring padding.
        question_mask: (B, L0) bool, the user-instruction tokens (no template, no image, never the answer).
        labels: (B, L0) target ids with -100 where no loss is taken, or None at inference.
        keys: one stable identifier per sample (used e.g. to seed per-sample randomness), or None.
        extra: family-specific tensors the processor returned (e.g. ``mm_token_type_ids``).
    """

    input_ids: Tensor
    attention_mask: Tensor
    pixel_inputs: dict[str, Tensor]
    positions: Tensor
    question_mask: Tensor
    labels: Tensor | None = None
    keys: list[str] | None = None
    extra: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> PromptBatch:
        move = lambda t: t.to(device) if isinstance(t, Tensor) else t  # noqa: E731
        return dataclasses.replace(
            self,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            pixel_inputs={k: move(v) for k, v in self.pixel_inputs.items()},
            positions=move(self.positions),
            question_mask=move(self.question_mask),
            labels=move(self.labels),
            extra={k: move(v) for k, v in self.extra.items()},
        )


@dataclasses.dataclass
class VisionFeatures:
    """What the vision side hands to pruning methods, for one image per sample.

    Attributes:
        tokens: (B, N, d_tok) pre-projector features of the selected layer, raster order. LLaVA: CLIP patch
            features (CLS dropped). Qwen2.5-VL: the 4 pre-merger patch features of each merged token,
            concatenated (d_tok = 4 * d_vision), so one row is one LLM visual token.
        num_tokens: (B,) number of valid rows of ``tokens`` per sample (N for LLaVA; varies for Qwen).
        grid: (B, 2) rows and columns of each sample's token grid (rows * cols == num_tokens).
        cls: (B, d_vision) the selected layer's CLS feature (LLaVA), or None.
        qk: ``qk(layer) -> (q, k, valid)`` recomputes one vision layer's queries and keys, each
            (B, H, T, d_head), and valid (B, T), without eager attention. LLaVA: T = 1 + N (CLS first). Qwen:
            T = 4 * N pre-merger patches in merged raster order (each 4 consecutive rows form one merged token);
            full-attention blocks only. ``layer`` indexes the tower's layers (negative counts from the end).
        attn_scale: the softmax scale of those layers (1/sqrt(d_head)).
    """

    tokens: Tensor
    num_tokens: Tensor
    grid: Tensor
    cls: Tensor | None
    qk: Callable[[int], tuple[Tensor, Tensor, Tensor]]
    attn_scale: float

    @property
    def token_mask(self) -> Tensor:
        """(B, N) bool, True for valid token rows."""
        n = self.tokens.shape[1]
        return torch.arange(n, device=self.tokens.device)[None, :] < self.num_tokens[:, None]

    def rows(self, index: Sequence[int]) -> VisionFeatures:
        """The features of samples ``index`` (in that order), as the tower gives them for those images alone: the
        token rows cut to the subset's longest image; ``qk`` keeps the batch's padded length (masked by ``valid``)."""
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.tokens.device)
        num = self.num_tokens[idx]
        width = int(num.max()) if len(idx) else 0
        qk = self.qk

        def sub_qk(layer: int) -> tuple[Tensor, Tensor, Tensor]:
            return tuple(t[idx] for t in qk(layer))

        return VisionFeatures(self.tokens[idx, :width], num, self.grid[idx],
                              None if self.cls is None else self.cls[idx], sub_qk, self.attn_scale)

    def attention(self, layer: int) -> Tensor:
        """Post-softmax attention probabilities of one vision layer, (B, H, T, T), computed in fp32."""
        q, k, valid = self.qk(layer)
        logits = (q.float() @ k.float().transpose(-1, -2)) * self.attn_scale
        logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
        # Padding rows of a smaller image in the batch are zeroed, so sums over queries see only real tokens.
        return logits.softmax(dim=-1) * valid[:, None, :, None]


@dataclasses.dataclass
class VisualTokens:
    """The visual tokens a method hands to the LLM, already in LLM space.

    Attributes:
        embeds: (B, K, D) LLM-space embeddings, in the order they enter the sequence.
        source_index: (B, K) long, the original visual index each row stands for (used for "original"
            position ids; a merged token names a representative index). Rows >= count are padding.
        count: (B,) long, valid rows per sample (may be 0: a blind run).
    """

    embeds: Tensor
    source_index: Tensor
    count: Tensor

    @staticmethod
    def gather(projected: Tensor, index: Tensor, count: Tensor) -> VisualTokens:
        """Selects rows ``index`` (B, K) of ``projected`` (B, N, D); rows >= count are padding."""
        safe = index.clamp(min=0)
        emb = torch.gather(projected, 1, safe[..., None].expand(-1, -1, projected.shape[-1]))
        return VisualTokens(emb, safe, count)


@dataclasses.dataclass
class LMInputs:
    """A left-padded batch of (possibly pruned) sequences ready for the language model.

    Attributes:
        embeds: (B, L, D) input embeddings; padding on the left so every sequence ends at slot L-1.
        valid: (B, L) bool, real tokens.
        positions: (B, L) long, or (3, B, L) for M-RoPE, the position ids of each slot.
        next_position: (B,) long, the position id of the first generated token (all three M-RoPE axes).
        segment: (B, L) int8 codes PAD / PREFIX / VISUAL / SUFFIX.
        visual_index: (B, L) long, original visual index of VISUAL slots, -1 elsewhere.
        labels: (B, L) target ids (-100 = no loss), or None.
    """

    embeds: Tensor
    valid: Tensor
    positions: Tensor
    next_position: Tensor
    segment: Tensor
    visual_index: Tensor
    labels: Tensor | None = None

    @property
    def num_visual(self) -> Tensor:
        """(B,) visual tokens per sample."""
        return (self.segment == VISUAL).sum(dim=1)
