"""Closed-form FLOP counts of stepprune.md Sec. 9.3 (matrix products only, a multiply-add = 2 FLOPs): the
independent cross-check of the meta-device counter (:mod:`stepprune.efficiency.flops`).

Everything is per sample; B samples cost B times as much. Attention over q queries and k keys costs
``4 q k d`` (Q K^T and A V over all heads, the full square for causal prefill, as SDPA computes it with a mask).

Sec. 9.3's StepPrune table (d = 1024, L_dec = 2, N = 576, L_text = 60) is reproduced by
``stepprune_flops(576, 60, ...)``: encoder 35.3 G, W_t 0.5 G, memory K/V + pointer keys 6.1 G, a decoder step
~67 M (69 M here: the static cache makes each step attend over all K_max = 192 slots).
"""

from __future__ import annotations


def linear(rows: int, d_in: int, d_out: int) -> int:
    """A dense layer on ``rows`` rows."""
    return 2 * rows * d_in * d_out


def attention(queries: int, keys: int, width: int) -> int:
    """Scaled dot-product attention of ``queries`` over ``keys`` at total width ``width`` (all heads)."""
    return 4 * queries * keys * width


def vit_flops(patches: int, patch_pixels: int, d: int, mlp: int, layers: int, extra_tokens: int = 1) -> int:
    """A pre-norm ViT (CLIP): patch embedding (a convolution = a dense layer per patch), ``layers`` blocks of
    q/k/v/o projections, full attention and a d -> mlp -> d MLP over ``patches + extra_tokens`` tokens."""
    t = patches + extra_tokens
    block = linear(t, d, 4 * d) + attention(t, t, d) + linear(t, d, mlp) + linear(t, mlp, d)
    return linear(patches, patch_pixels, d) + layers * block


def llava_projector_flops(rows: int, d_vision: int, d_llm: int) -> int:
    """LLaVA's 2-layer MLP projector d_v -> d_llm -> d_llm on ``rows`` tokens."""
    return linear(rows, d_vision, d_llm) + linear(rows, d_llm, d_llm)


def llm_layer_flops(tokens: int, d: int, kv_width: int, mlp: int) -> int:
    """One LLaMA/Qwen2 decoder layer on ``tokens`` tokens: q/o (d x d), k/v (d x kv_width, GQA), gated MLP
    (3 matrices d x mlp), causal attention over the full square."""
    return (2 * linear(tokens, d, d) + 2 * linear(tokens, d, kv_width) + 3 * linear(tokens, d, mlp)
            + attention(tokens, tokens, d))


def llm_prefill_flops(tokens_per_layer: list[int], d: int, kv_width: int, mlp: int, vocab: int) -> int:
    """The prefill of a (pruned) sequence — ``tokens_per_layer[l]`` tokens entering layer l — and the LM head on
    the last token (the rotary table is an elementwise product in transformers 5: no matrix product)."""
    return linear(1, d, vocab) + sum(llm_layer_flops(t, d, kv_width, mlp) for t in tokens_per_layer)


def stepprune_flops(tokens: int, question: int, *, d: int = 1024, mlp_ratio: int = 4, encoder_layers: int = 2,
                    decoder_layers: int = 2, d_tok: int = 1024, d_llm: int = 4096, steps: int = 0, k_max: int = 192,
                    pointer_head: bool = True) -> dict[str, int]:
    """The StepPrune selector's FLOPs for one image (Sec. 9.3), per part.

    Args:
        tokens: N image tokens. question: L_text instruction tokens. steps: loop steps executed (K+1 to stop).
        k_max: slots of the static self-attention cache (each step attends over all of them, masked).

    Returns:
        ``{"input_projection", "text_projection", "encoder", "memory", "step", "loop", "total"}``.
    """
    seq = tokens + question
    slots = tokens + 1
    block = linear(seq, d, 4 * d) + attention(seq, seq, d) + 2 * linear(seq, d, mlp_ratio * d)
    layer_step = (linear(1, d, 4 * d) + attention(1, k_max, d)  # qkv + self-out, cached self-attention
                  + linear(1, d, 2 * d) + attention(1, slots, d)  # cross q + out, glimpse over N+1 slots
                  + 2 * linear(1, d, mlp_ratio * d))
    pointer = linear(1, d, d) + 2 * slots * d if pointer_head else 0
    parts = {
        "input_projection": linear(tokens, d_tok, d) if d_tok != d else 0,
        "text_projection": linear(question, d_llm, d),
        "encoder": encoder_layers * block,
        "memory": linear(slots, d, 2 * decoder_layers * d + (d if pointer_head else 0)),
        "step": decoder_layers * layer_step + pointer,
    }
    parts["loop"] = steps * parts["step"]
    parts["total"] = sum(v for k, v in parts.items() if k != "step")
    return parts
