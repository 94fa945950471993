"""The batched selection loop, Eqs. (5)-(9): one step function for the training rollout, the eager inference loop
and the CUDA-graph capture (:mod:`stepprune.selector.graphs`).

State (:class:`LoopState`), all on the device with static shapes (Sec. 9.1): the step index t (a 0-dim tensor),
the log-space mask M (B, N+1) fp32, the selection buffer sel (B, K_max) filled with the sentinel N, the counts K
(B,), the done and capped flags (B,), the next query q (B, d), the decoder's self-attention cache and, at
inference, the Eq. (9) diagnostics. One step (:func:`loop_step`) is pure tensor ops updating that state **in
place** — no ``.item()``, no ``nonzero``, no boolean-mask indexing, no new state tensors — so the same buffers can
be replayed by a CUDA graph:

    bias = M + [stop slot: -1e9 while K < K_min]          # K_min rule (clamped to N_b per sample)
    l    = decoder.step(q, t, cache, memory, bias)         # KV-cached; memory K/V and pointer keys precomputed
    i    = argmax(l)                                       # = argmax of p_t for any tau
    active = ~done & (i != N)
    sel[:, t] = where(active, i, N);  K += active;  M[i] += -1e9 * active   (the stop slot is never masked)
    done |= (i == N) | (K >= cap)                          # cap = min(K_max, N_b) (or ceil(ratio N_b))
    q    = z_i (+ ST term when training) + P_{t+1};  t += 1

Finished samples run on in lock-step; nothing of theirs changes, and their later steps are marked invalid.

* ``train=True``: a growing KV cache (autograd-safe), the ST feedback (q is rebound, not written in place, so it
  carries the gradient), and every step's masked logits and validity recorded for Eqs. (10)-(11) and (15). The
  loop stops after the step at which every sample is done (one host read per step; the backward pass dominates).
* ``train=False`` (under no_grad): a static cache written in place at slot t, and one host read of all(done)
  every ``sync_every`` steps (never inside a chunk of steps); diagnostics (Eq. 9 log-probability, entropy,
  p_1(STOP)) are accumulated on the device. ``sync_every=1`` is the plain loop (a read after every step); the
  default chunk of 16 wastes at most 15 lock-step steps and, on CUDA, is what one captured graph replays.

:func:`run_steps` runs a fixed number of inference steps with no host read at all: the body of one chunk (what a
CUDA graph captures) and the shape-only FLOP count of the loop on the meta device.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from stepprune.selector.decoder import NEG, Memory, PointerDecoder, SelfAttentionCache


@dataclasses.dataclass
class Rollout:
    """One batch's episode.

    Attributes:
        selection: (B, K_max) long, chosen image slots in selection order; the sentinel N after the K_b-th.
        count: (B,) long, K_b.
        steps: (B,) long, executed steps T_ep (K_b + 1 if stopped, K_b if capped).
        capped: (B,) bool, the episode hit its cap instead of choosing the stop slot.
        logits: (B, T, N+1) fp32 masked logits of every executed loop step (training only, else None).
        valid: (B, T) bool, step t was executed by sample b (training only).
        log_prob: (B,) Eq. (9) log P(S | X, T) (inference diagnostics; None when not computed).
        entropy: (B,) mean pointer entropy over executed steps (inference diagnostics; None when not computed).
        p1_stop: (B,) p(STOP) at the first step where stopping is allowed, t = K_min_b + 1 (the spec's p_1(STOP)
            when K_min = 0; with K_min >= 1 p_1(STOP) is 0 by construction). Inference diagnostics; None when not
            computed.
    """

    selection: Tensor
    count: Tensor
    steps: Tensor
    capped: Tensor
    logits: Tensor | None = None
    valid: Tensor | None = None
    log_prob: Tensor | None = None
    entropy: Tensor | None = None
    p1_stop: Tensor | None = None


def selection_limits(num_tokens: Tensor, k_min: int, k_max: int, k_max_ratio: float | None) -> tuple[Tensor, Tensor]:
    """Per-sample (K_min, cap) from the valid token counts N_b, both (B,) long.

    cap_b = min(K_max, N_b) (and <= ceil(ratio * N_b) when a ratio is set); K_min_b = min(K_min, cap_b), so that
    a sample always has a legal action.
    """
    cap = num_tokens.clamp(max=k_max)
    if k_max_ratio is not None:
        cap = torch.minimum(cap, torch.ceil(num_tokens.double() * k_max_ratio).long().clamp(min=1))
    return torch.minimum(torch.full_like(cap, k_min), cap), cap


@dataclasses.dataclass
class LoopState:
    """The loop's device state for one batch (shapes in the module docstring); updated in place by
    :func:`loop_step`. Allocate with :meth:`allocate`, (re)initialise with :meth:`reset_`."""

    t: Tensor
    mask: Tensor
    sel: Tensor
    count: Tensor
    done: Tensor
    capped: Tensor
    q: Tensor
    stop_col: Tensor  # (N+1,) fp32, 1 at the stop slot: the K_min block is added through it
    cache: SelfAttentionCache
    log_prob: Tensor | None = None
    entropy: Tensor | None = None
    p1_stop: Tensor | None = None

    @classmethod
    def allocate(cls, decoder: PointerDecoder, batch: int, slots: int, k_max: int, device: torch.device,
                 dtype: torch.dtype, *, train: bool = False, diagnostics: bool = False) -> LoopState:
        """Uninitialised buffers for B = ``batch`` samples over ``slots`` = N+1 memory slots (call :meth:`reset_`).

        ``train`` gives a growing cache (autograd-safe) and no diagnostics; otherwise the cache is static with
        ``k_max`` slots per layer.
        """
        B, d = batch, decoder.d
        if train:
            cache = SelfAttentionCache.growing(decoder.num_layers)
        else:
            cache = SelfAttentionCache.static_cache(decoder.num_layers, B, decoder.heads, k_max, d // decoder.heads,
                                                    device, dtype)
        stop_col = torch.zeros(slots, device=device, dtype=torch.float32)
        stop_col[slots - 1] = 1.0
        want_diag = diagnostics and not train
        diag = (lambda: torch.zeros(B, device=device)) if want_diag else (lambda: None)  # noqa: E731
        return cls(
            t=torch.zeros((), dtype=torch.long, device=device),
            mask=torch.zeros(B, slots, device=device, dtype=torch.float32),
            sel=torch.zeros(B, k_max, dtype=torch.long, device=device),
            count=torch.zeros(B, dtype=torch.long, device=device),
            done=torch.zeros(B, dtype=torch.bool, device=device),
            capped=torch.zeros(B, dtype=torch.bool, device=device),
            q=torch.zeros(B, d, device=device, dtype=dtype),
            stop_col=stop_col,
            cache=cache,
            log_prob=diag(), entropy=diag(), p1_stop=diag(),
        )

    @torch.no_grad()
    def reset_(self, decoder: PointerDecoder, token_mask: Tensor) -> LoopState:
        """Starts an episode in place: t = 0, M = 0 on valid image slots (-1e9 on padding, 0 on the stop slot),
        sel = N, K = 0, no sample done, q = q_1 = e_start + P_1, an empty cache and zero diagnostics.

        Args:
            token_mask: (B, N) bool, the valid image slots.
        """
        N = token_mask.shape[1]
        self.t.zero_()
        self.mask[:, :N].copy_(torch.where(token_mask, 0.0, NEG))
        self.mask[:, N:].zero_()
        self.sel.fill_(N)
        self.count.zero_()
        self.done.zero_()
        self.capped.zero_()
        self.q.copy_(decoder.start_query(self.q.shape[0], self.t, self.q.dtype))
        if self.cache.static:  # masked slots get exactly zero weight; zeroing keeps runs bit-identical anyway
            for store in (self.cache.keys, self.cache.values):
                for buf in store:
                    buf.zero_()
        for buf in (self.log_prob, self.entropy, self.p1_stop):
            if buf is not None:
                buf.zero_()
        return self

    def rollout(self, clone: bool = False) -> Rollout:
        """The episode so far (``clone``: copies, for state buffers that will be reused, e.g. a CUDA graph's)."""
        c = (lambda x: None if x is None else x.clone()) if clone else (lambda x: x)  # noqa: E731
        steps = self.count + (~self.capped).long()
        out = Rollout(c(self.sel), c(self.count), steps, c(self.capped))
        if self.log_prob is not None:
            out.log_prob, out.entropy, out.p1_stop = c(self.log_prob), self.entropy / steps.clamp(min=1).float(), \
                c(self.p1_stop)
        return out


def loop_step(decoder: PointerDecoder, mem: Memory, st: LoopState, k_min: Tensor, cap: Tensor, *, train: bool,
              tau: float = 1.0) -> tuple[Tensor, Tensor, Tensor | None]:
    """One step of the loop, updating ``st`` in place (``st.q`` is rebound when training, to carry the gradient).

    Args:
        decoder, mem: the pointer decoder and its memory for this batch.
        st: the loop state.
        k_min, cap: (B,) long limits from :func:`selection_limits`.
        train: record p_t and feed the straight-through term back (training), else the value-only feedback and
            the in-place diagnostics (when ``st`` holds them).
        tau: softmax temperature of p_t.

    Returns:
        The step's masked logits (B, N+1) fp32, which samples executed it (B,) bool, and p_t (training) or None.
    """
    B = st.count.shape[0]
    N = mem.stop_index
    bias = st.mask + st.stop_col * torch.where(st.count < k_min, NEG, 0.0)[:, None]
    logits = decoder.step(st.q, st.t, st.cache, mem, bias)
    chosen = logits.argmax(dim=-1)
    executed = ~st.done
    is_stop = chosen == N
    active = executed & ~is_stop
    st.sel.scatter_(1, st.t.reshape(1, 1).expand(B, 1), torch.where(active, chosen, N)[:, None])
    st.count.add_(active.long())
    st.mask.scatter_add_(1, chosen[:, None], (NEG * active.float())[:, None])
    st.capped.logical_or_(active & (st.count >= cap))
    st.done.logical_or_(is_stop | (st.count >= cap))
    p = None
    if train:
        p = torch.softmax(logits / tau, dim=-1)
    elif st.log_prob is not None:
        logp = torch.log_softmax(logits / tau, dim=-1)
        w = executed.float()
        st.log_prob.add_(w * logp.gather(1, chosen[:, None]).squeeze(1))
        st.entropy.add_(w * -(logp.exp() * logp).sum(dim=-1))
        st.p1_stop.copy_(torch.where(executed & (k_min == st.t), logp[:, N].exp(), st.p1_stop))
    q = decoder.next_query(mem, chosen, p, st.t)
    if train:
        st.q = q
    else:
        st.q.copy_(q)
    st.t.add_(1)
    return logits, executed, p


def run_steps(decoder: PointerDecoder, mem: Memory, st: LoopState, k_min: Tensor, cap: Tensor, steps: int,
              tau: float = 1.0) -> None:
    """``steps`` inference steps with no host read (one chunk; also what a CUDA graph captures)."""
    for _ in range(steps):
        loop_step(decoder, mem, st, k_min, cap, train=False, tau=tau)


def run_selection(
    decoder: PointerDecoder,
    mem: Memory,
    token_mask: Tensor,
    k_min: Tensor,
    cap: Tensor,
    k_max: int,
    *,
    train: bool,
    tau: float = 1.0,
    sync_every: int = 16,
    diagnostics: bool = True,
) -> Rollout:
    """Runs the pointer loop for a batch (eagerly; see :mod:`stepprune.selector.graphs` for the captured loop).

    Args:
        decoder: the pointer decoder.
        mem: its memory for this batch (N+1 slots, the stop slot last).
        token_mask: (B, N) bool, valid image slots (padding is masked from the start).
        k_min, cap: (B,) long limits from :func:`selection_limits`.
        k_max: the static loop bound and selection-buffer width.
        train: training rollout (module docstring) or inference rollout.
        tau: softmax temperature of p_t (training ST term, diagnostics).
        sync_every: inference: steps between the host reads of all(done) (the chunk size).
        diagnostics: inference: accumulate Eq. (9) log-probability, entropy and p(STOP) at the first step where
            stopping is allowed.
    """
    B, slots, _ = mem.z.shape
    st = LoopState.allocate(decoder, B, slots, k_max, mem.z.device, mem.z.dtype, train=train,
                            diagnostics=diagnostics)
    st.reset_(decoder, token_mask)
    if train:  # q_1 must carry the gradient to e_start and P_1
        st.q = decoder.start_query(B, st.t, mem.z.dtype)
        record_logits, record_valid = [], []
        for _ in range(k_max):
            logits, executed, _ = loop_step(decoder, mem, st, k_min, cap, train=True, tau=tau)
            record_logits.append(logits)
            record_valid.append(executed)
            if bool(st.done.all()):  # one host read per training step
                break
        out = st.rollout()
        out.logits = torch.stack(record_logits, dim=1)
        out.valid = torch.stack(record_valid, dim=1)
        return out
    for start in range(0, k_max, sync_every):
        end = min(start + sync_every, k_max)
        run_steps(decoder, mem, st, k_min, cap, end - start, tau)
        if end < k_max and bool(st.done.all()):  # one host read per chunk, between chunks
            break
    return st.rollout()
