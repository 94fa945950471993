"""What the attention gate's differentiable bias costs one LLM attention layer, and what a flash-kernel form of
the same bias would save: the measurement behind the embedded default's timing (its warm start's teacher is the
LM's gradient on this gate, ``stepprune.gate_saliency``, taken 300 times over 8 questions).

The gate adds log(g_j + floor) to every query's logit for visual key j. As a (B, 1, L, L) float mask that needs a
gradient it sends SDPA to its math kernel (the whole (B, H, L, L) score matrix, forward and backward). The same
bias is one more channel of the keys: q' = [q, 1], k' = [k, b / scale] gives q'.k' * scale = q.k * scale + b, which
the flash kernel takes with a boolean causal mask, or with ``is_causal`` alone for right-padded batches. Prints one
JSON line per form (seconds per forward + backward, median of ``--repeats``) and the largest gradient difference
from the math form, so a form that computes something else shows it.

    python jobs/bench_gate_attention.py                        # the warm start's shapes on the tiny backbone
    python jobs/bench_gate_attention.py --batch 8 --heads 6 --length 620 --head-dim 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--length", type=int, default=620, help="slots: 576 visual tokens + prompt + answer")
    ap.add_argument("--visual", type=int, default=576)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, H, L, d = args.batch, args.heads, args.length, args.head_dim
    q, k, v = (torch.randn(B, H, L, d, requires_grad=True) for _ in range(3))
    w = torch.randn(B, H, L, d)  # a fixed upstream gradient
    allowed = torch.ones(L, L, dtype=torch.bool).tril()[None, None].expand(B, 1, L, L)
    visual = torch.zeros(B, L, dtype=torch.bool)
    visual[:, 1: 1 + args.visual] = True
    scale = d ** -0.5

    def key_bias(g: torch.Tensor) -> torch.Tensor:  # (B, L): log(g + floor) on visual slots, 0 elsewhere
        return torch.where(visual, torch.log(g + 1e-6), 0.0)

    def math(g):
        mask = torch.where(allowed, key_bias(g)[:, None, None, :], float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    def folded(g, causal_only: bool):
        b = key_bias(g)
        q2 = torch.cat([q, torch.ones(B, H, L, 1)], -1)
        k2 = torch.cat([k, (b / scale)[:, None, :, None].expand(B, H, L, 1)], -1)
        v2 = torch.cat([v, torch.zeros(B, H, L, 1)], -1)
        if causal_only:
            out = F.scaled_dot_product_attention(q2, k2, v2, is_causal=True, scale=scale)
        else:
            out = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=allowed, scale=scale)
        return out[..., :d]

    forms = {"math (float mask with grad)": math, "flash, bias as a key channel, bool mask": lambda g: folded(g, False),
             "flash, bias as a key channel, is_causal": lambda g: folded(g, True)}
    grads, rows = {}, []
    for name, f in forms.items():
        times = []
        for r in range(args.repeats + 2):
            g = torch.full((B, L), 0.5, requires_grad=True)
            t0 = time.perf_counter()
            (f(g) * w).sum().backward()
            if r >= 2:  # the first two warm the allocator and the kernels
                times.append(time.perf_counter() - t0)
        grads[name] = g.grad
        rows.append({"form": name, "s_per_fwd_bwd": statistics.median(times)})
    ref = rows[0]["s_per_fwd_bwd"]
    base = grads[rows[0]["form"]]
    for row in rows:
        row["speedup_vs_math"] = ref / row["s_per_fwd_bwd"]
        row["max_abs_grad_diff"] = float((grads[row["form"]] - base).abs().max())
        row["max_abs_grad"] = float(base.abs().max())
        print(json.dumps({"B": B, "H": H, "L": L, "d": d, "threads": torch.get_num_threads(), **row}), flush=True)


if __name__ == "__main__":
    main()
