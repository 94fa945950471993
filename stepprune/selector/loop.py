"""The batched selection loop, Eqs. (5)-(9): one code path for the training and the inference rollout.

State, all on the device with static shapes (Sec. 9.1): the step index t (a 0-dim tensor), the log-space mask M
(B, N+1) fp32, the selection buffer sel (B, K_max) filled with the sentinel N, the counts K (B,) and the done flags
(B,). One step is pure tensor ops — no ``.item()``, no ``nonzero``, no boolean-mask indexing:

    bias = M + [stop slot: -1e9 while K < K_min]          # K_min rule (clamped to N_b per sample)
    l    = decoder.step(q, t, cache, memory, bias)         # KV-cached; memory K/V and pointer keys precomputed
    i    = argmax(l)                                       # = argmax of p_t for any tau
    active = ~done & (i != N)
    sel[:, t] = where(active, i, N);  K += active;  M[i] += -1e9 * active   (the stop slot is never masked)
    done |= (i == N) | (K >= cap)                          # cap = min(K_max, N_b) (or ceil(ratio N_b))
    q    = z_i (+ ST term when training) + P_{t+1};  t += 1

Finished samples run on in lock-step; nothing of theirs changes, and their later steps are marked invalid.

* ``train=True``: a growing KV cache (autograd-safe), the ST feedback, and every step's masked logits and
  validity recorded for Eqs. (10)-(11) and (15). The loop stops after the step at which every sample is done
  (one host read per step; the backward pass dominates anyway).
* ``train=False`` (under no_grad): a static cache written in place at slot t, and one host read of all(done)
  every ``sync_every`` steps (never inside a step); diagnostics (Eq. 9 log-probability, entropy, p_1(STOP)) are
  accumulated on the device.
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
    """Runs the pointer loop for a batch.

    Args:
        decoder: the pointer decoder.
        mem: its memory for this batch (N+1 slots, the stop slot last).
        token_mask: (B, N) bool, valid image slots (padding is masked from the start).
        k_min, cap: (B,) long limits from :func:`selection_limits`.
        k_max: the static loop bound and selection-buffer width.
        train: training rollout (module docstring) or inference rollout.
        tau: softmax temperature of p_t (training ST term, diagnostics).
        sync_every: inference: steps between the host reads of all(done).
        diagnostics: inference: accumulate Eq. (9) log-probability, entropy and p(STOP) at the first step where
            stopping is allowed.
    """
    z = mem.z
    B, slots, d = z.shape
    N = slots - 1
    dev = z.device
    stop_col = torch.zeros(slots, device=dev, dtype=torch.float32)
    stop_col[N] = 1.0
    t = torch.zeros((), dtype=torch.long, device=dev)
    mask = torch.cat([torch.where(token_mask, 0.0, NEG).float(), torch.zeros(B, 1, device=dev)], dim=1)
    sel = torch.full((B, k_max), N, dtype=torch.long, device=dev)
    count = torch.zeros(B, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    capped = torch.zeros(B, dtype=torch.bool, device=dev)
    if train:
        cache = SelfAttentionCache.growing(decoder.num_layers)
    else:
        layer0 = decoder.layers[0]
        cache = SelfAttentionCache.static_cache(decoder.num_layers, B, layer0.heads, k_max, d // layer0.heads,
                                                dev, z.dtype)
    record_logits, record_valid = [], []
    want_diag = diagnostics and not train
    log_prob = torch.zeros(B, device=dev) if want_diag else None
    entropy = torch.zeros(B, device=dev) if want_diag else None
    p1_stop = torch.zeros(B, device=dev) if want_diag else None
    q = decoder.start_query(B, t, z.dtype)
    for s in range(k_max):
        bias = mask + stop_col * torch.where(count < k_min, NEG, 0.0)[:, None]
        logits = decoder.step(q, t, cache, mem, bias)
        chosen = logits.argmax(dim=-1)
        executed = ~done
        is_stop = chosen == N
        active = executed & ~is_stop
        sel = sel.scatter(1, t.reshape(1, 1).expand(B, 1), torch.where(active, chosen, N)[:, None])
        count = count + active.long()
        mask = mask.scatter_add(1, chosen[:, None], (NEG * active.float())[:, None])
        capped = capped | (active & (count >= cap))
        done = done | is_stop | (count >= cap)
        p = None
        if train:
            p = torch.softmax(logits / tau, dim=-1)
            record_logits.append(logits)
            record_valid.append(executed)
        elif want_diag:
            logp = torch.log_softmax(logits / tau, dim=-1)
            w = executed.float()
            log_prob = log_prob + w * logp.gather(1, chosen[:, None]).squeeze(1)
            entropy = entropy + w * -(logp.exp() * logp).sum(dim=-1)
            p1_stop = torch.where(executed & (k_min == s), logp[:, N].exp(), p1_stop)
        q = decoder.next_query(mem, chosen, p, t)
        t = t + 1
        if train:
            if bool(done.all()):  # one host read per training step
                break
        elif (s + 1) % sync_every == 0 and bool(done.all()):  # one host read per chunk, between steps
            break
    steps = count + (~capped).long()
    out = Rollout(sel, count, steps, capped)
    if train:
        out.logits = torch.stack(record_logits, dim=1)
        out.valid = torch.stack(record_valid, dim=1)
    elif want_diag:
        out.log_prob, out.entropy, out.p1_stop = log_prob, entropy / steps.clamp(min=1).float(), p1_stop
    return out
