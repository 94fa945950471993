"""The conditional pointer decoder, Eqs. (4)-(8): memory with the stop slot, KV-cached decoder steps, pointer logits
and the straight-through feedback of the chosen slot.

Memory, Eq. (4): Z = [H_v ; e_STOP] in R^{(N+1) x d}; the stop slot is the *last* row (index N) and does not pass
through the encoder. The cross-attention K/V of every decoder layer and the pointer keys are one GEMM of Z, done
once per image (:meth:`PointerDecoder.memory`).

One decoder step for the single new query q_t (B, d), per layer (pre-norm):

    u = q + MHSA_causal(LN_a(q); K/V = LN_a(q_{1:t}))          # KV-cached
    v = u + MHCA(LN_b(u); K = Z W_K, V = Z W_V, additive mask M_t) # the "glimpse", masked when mask_glimpse
    q <- v + FFN(LN_c(v))

then h_t = LN_out(q) and the pointer logits (Eq. 6), in fp32:

* ``pointer="head"`` (default, Sec. 12 item 1): l_t = (h_t W_p^Q)(Z W_p^K)^T / sqrt(d) — a dedicated single-head
  pointer attention (W_p^{Q,K} is the paper's "pointer projection");
* ``pointer="cross_attention"``: the head-averaged pre-softmax cross-attention logits of the last layer.

Optional clipping C tanh(l / C) is applied before the mask; then l_t += M_t. Masked entries use a large finite
negative (-1e9), so p_t is exactly 0 there in fp32.

Feedback, Eq. (8): q_{t+1} = z_{i_t} + (p_t - sg(p_t))^T Z (+ P_{t+1}). The forward value is exactly z_{i_t} and
d q_{t+1} / d p_t = Z^T (straight-through); at inference the soft term is skipped.

Self-attention cache: :meth:`SelfAttentionCache.static` preallocates (B, H, K_max, d_h) per layer and writes slot t
with ``index_copy_`` at a device-side step index, attending under the mask arange(K_max) <= t (inference: static
shapes, no host sync). :meth:`SelfAttentionCache.growing` concatenates (training: autograd-safe, no in-place writes).
Its cost: autograd keeps every step's concatenated K/V, O(T^2 B d) memory — at d = 1024, B = 32, T = 192, two
layers, about 10 GB in fp32 (5 GB in bf16); use micro-batches (or the teacher-forced variant of spec Sec. 7.2,
not implemented) where that is too much.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepprune.selector.layers import FeedForward, merge_heads, split_heads

NEG = -1e9  # the log-space mask value: exp(NEG - max) == 0 in fp32, without inf arithmetic


class SelfAttentionCache:
    """Keys and values of the decoder's causal self-attention, one entry per executed step and layer."""

    def __init__(self, layers: int, keys: list | None = None, values: list | None = None):
        self.static = keys is not None
        self.keys = keys if keys is not None else [None] * layers
        self.values = values if values is not None else [None] * layers

    @classmethod
    def growing(cls, layers: int) -> SelfAttentionCache:
        """A cache that concatenates each new step (autograd-safe; used by the training path)."""
        return cls(layers)

    @classmethod
    def static_cache(cls, layers: int, batch: int, heads: int, steps: int, head_dim: int,
                     device: torch.device, dtype: torch.dtype) -> SelfAttentionCache:
        """A preallocated cache of ``steps`` slots per layer (inference: static shapes, in-place writes)."""
        shape = (batch, heads, steps, head_dim)
        keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        return cls(layers, keys, values)

    def append(self, layer: int, k: Tensor, v: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Adds step ``t``'s key/value (B, H, 1, d_h) to ``layer``; returns all keys, values and the key mask.

        The mask is None for a growing cache (every entry is a past step) and (1, 1, 1, K_max) bool for a static
        one (slots <= t).
        """
        if self.static:
            slot = t.reshape(1)
            self.keys[layer].index_copy_(2, slot, k)
            self.values[layer].index_copy_(2, slot, v)
            steps = self.keys[layer].shape[2]
            allowed = (torch.arange(steps, device=k.device) <= t)[None, None, None, :]
            return self.keys[layer], self.values[layer], allowed
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v, None


@dataclasses.dataclass
class Memory:
    """The decoder's fixed context for one batch, computed once (Eq. 4 and the static GEMM of Sec. 9.1).

    Attributes:
        z: (B, N+1, d) Z = [H_v ; e_STOP], the stop slot last.
        keys: per layer (B, H, N+1, d_h) cross-attention keys.
        values: per layer (B, H, N+1, d_h) cross-attention values.
        pointer_keys: (B, N+1, d) fp32 Z W_p^K (``pointer="head"``), else None.
    """

    z: Tensor
    keys: list[Tensor]
    values: list[Tensor]
    pointer_keys: Tensor | None

    @property
    def stop_index(self) -> int:
        return self.z.shape[1] - 1


class DecoderLayer(nn.Module):
    """One pre-norm pointer-decoder layer: causal self-attention, masked cross-attention to Z, FFN."""

    def __init__(self, d: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.ln_a = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.self_out = nn.Linear(d, d)
        self.ln_b = nn.LayerNorm(d)
        self.cross_q = nn.Linear(d, d)
        self.cross_out = nn.Linear(d, d)
        self.ln_c = nn.LayerNorm(d)
        self.ffn = FeedForward(d, mlp_ratio)

    def forward(self, x: Tensor, layer: int, cache: SelfAttentionCache, t: Tensor, mem_k: Tensor, mem_v: Tensor,
                bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """One step for the new query.

        Args:
            x: (B, 1, d) the query stream at this layer.
            layer: this layer's index in the cache.
            cache: the self-attention cache.
            t: 0-dim long device tensor, the step index (0-based).
            mem_k, mem_v: (B, H, N+1, d_h) this layer's cross-attention keys/values.
            bias: (B, 1, 1, N+1) additive glimpse mask in x's dtype, or None.

        Returns:
            The updated stream (B, 1, d) and the cross-attention queries (B, H, 1, d_h).
        """
        q, k, v = (split_heads(z, self.heads) for z in self.qkv(self.ln_a(x)).chunk(3, dim=-1))
        keys, values, allowed = cache.append(layer, k, v, t)
        x = x + self.self_out(merge_heads(F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)))
        qc = split_heads(self.cross_q(self.ln_b(x)), self.heads)
        x = x + self.cross_out(merge_heads(F.scaled_dot_product_attention(qc, mem_k, mem_v, attn_mask=bias)))
        return x + self.ffn(self.ln_c(x)), qc


class PointerDecoder(nn.Module):
    """D_phi with the learned start and stop vectors, step embeddings and the pointer head.

    Args:
        d, heads, mlp_ratio, layers: decoder shape.
        k_max: number of step embeddings (one per possible query).
        step_embedding: add learned P_t to the queries.
        pointer: ``"head"`` or ``"cross_attention"`` (module docstring).
        mask_glimpse: add M_t to every layer's cross-attention logits.
        logit_clip: C of C tanh(l / C), or None.
        init_std: std of e_start, e_STOP and P.
    """

    def __init__(self, d: int, heads: int, mlp_ratio: int = 4, layers: int = 2, k_max: int = 192,
                 step_embedding: bool = True, pointer: str = "head", mask_glimpse: bool = True,
                 logit_clip: float | None = None, init_std: float = 0.02):
        super().__init__()
        self.d, self.heads, self.num_layers = d, heads, layers
        self.pointer, self.mask_glimpse, self.logit_clip = pointer, mask_glimpse, logit_clip
        self.start = nn.Parameter(torch.randn(d) * init_std)  # e_start
        self.stop = nn.Parameter(torch.randn(d) * init_std)  # e_STOP
        self.step_embed = nn.Parameter(torch.randn(k_max, d) * init_std) if step_embedding else None
        self.layers = nn.ModuleList(DecoderLayer(d, heads, mlp_ratio) for _ in range(layers))
        self.ln_out = nn.LayerNorm(d)
        # One GEMM of Z gives every layer's cross K/V and (pointer head) the pointer keys.
        extra = d if pointer == "head" else 0
        self.memory_proj = nn.Linear(d, 2 * layers * d + extra)
        self.pointer_q = nn.Linear(d, d) if pointer == "head" else None

    @property
    def k_max(self) -> int | None:
        return None if self.step_embed is None else self.step_embed.shape[0]

    def memory(self, h_v: Tensor) -> Memory:
        """Z = [H_v ; e_STOP] and its projections, (B, N, d) -> :class:`Memory`."""
        B = h_v.shape[0]
        z = torch.cat([h_v, self.stop.to(h_v.dtype).expand(B, 1, -1)], dim=1)
        proj = self.memory_proj(z)
        d, L = self.d, self.num_layers
        keys = [split_heads(proj[..., 2 * i * d: (2 * i + 1) * d], self.heads) for i in range(L)]
        values = [split_heads(proj[..., (2 * i + 1) * d: (2 * i + 2) * d], self.heads) for i in range(L)]
        pkeys = proj[..., 2 * L * d:].float() if self.pointer == "head" else None
        return Memory(z, keys, values, pkeys)

    def _position(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        """P_t for a device step index (clamped to the last embedding), (1, d); 0 without step embeddings."""
        if self.step_embed is None:
            return torch.zeros((), dtype=dtype, device=t.device)
        idx = t.reshape(1).clamp(max=self.step_embed.shape[0] - 1)
        return self.step_embed.index_select(0, idx).to(dtype)

    def start_query(self, batch: int, t0: Tensor, dtype: torch.dtype) -> Tensor:
        """q_1 = e_start + P_1, (B, d)."""
        return (self.start.to(dtype) + self._position(t0, dtype)).expand(batch, -1)

    def next_query(self, mem: Memory, chosen: Tensor, p: Tensor | None, t: Tensor) -> Tensor:
        """Eq. (8) feedback: q_{t+1} = z_{i_t} + (p_t - sg(p_t))^T Z + P_{t+1}, (B, d).

        Args:
            mem: the memory.
            chosen: (B,) long, i_t.
            p: (B, N+1) p_t for the straight-through term (training), or None (inference: value only).
            t: 0-dim long, the index of step t (the next query gets P at t + 1).
        """
        z = mem.z
        q = torch.gather(z, 1, chosen[:, None, None].expand(-1, 1, z.shape[-1])).squeeze(1)
        if p is not None:
            soft = p.to(z.dtype) - p.to(z.dtype).detach()  # exactly 0 in value
            q = q + torch.bmm(soft[:, None, :], z).squeeze(1)
        return q + self._position(t + 1, z.dtype)

    def step(self, q: Tensor, t: Tensor, cache: SelfAttentionCache, mem: Memory, bias: Tensor) -> Tensor:
        """One decoder step and the pointer logits, Eqs. (5)-(6).

        Args:
            q: (B, d) the new query q_t.
            t: 0-dim long device tensor, the step index.
            cache: self-attention cache.
            mem: the memory.
            bias: (B, N+1) fp32 log-space mask M_t (including the K_min block of the stop slot).

        Returns:
            (B, N+1) fp32 masked pointer logits l_t.
        """
        x = q[:, None, :]
        glimpse = bias[:, None, None, :].to(x.dtype) if self.mask_glimpse else None
        qc = None
        for i, layer in enumerate(self.layers):
            x, qc = layer(x, i, cache, t, mem.keys[i], mem.values[i], glimpse)
        h = self.ln_out(x[:, 0])
        if self.pointer == "head":
            logits = torch.einsum("bd,bnd->bn", self.pointer_q(h).float(), mem.pointer_keys) / math.sqrt(self.d)
        else:  # head-averaged pre-softmax cross-attention logits of the last layer
            dh = self.d // self.heads
            logits = torch.einsum("bhd,bhnd->bn", qc[:, :, 0].float(), mem.keys[-1].float()) / (
                math.sqrt(dh) * self.heads)
        if self.logit_clip is not None:
            logits = self.logit_clip * torch.tanh(logits / self.logit_clip)
        return logits + bias
