"""What the attention gate's differentiable bias costs one LLM attention layer as a float mask (SDPA's math kernel)
against the per-key form the runner uses (``stepprune.backbones.key_bias_attention``: the bias rides in the keys to
the flash kernel). The warm start's teacher is the LM's gradient on this gate (``stepprune.gate_saliency``), taken
for every training question it draws, so this is most of its time.

The gate adds log(g_j + floor) to every query's logit for visual key j. As a (B, 1, L, L) float mask that needs a
gradient it sends SDPA to its math kernel (the whole (B, H, L, L) score matrix, forward and backward). The same
bias is one more channel of the keys, q' = [q, 1], k' = [k, b / scale], which the flash kernel takes with a boolean
causal mask. Prints one JSON line per form (seconds per forward + backward, median of ``--repeats``) and the largest
gradient difference from the math form, so a form that computes something else shows it.

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

from stepprune.backbones.key_bias_attention import key_bias_sdpa_forward


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

    module = torch.nn.Module()  # what the attention function reads of an HF attention module: no GQA here
    module.num_key_value_groups = 1

    def keys(g):  # the runner's form, (B, L, H, d) back to (B, H, L, d)
        return key_bias_sdpa_forward(module, q, k, v, allowed, scaling=scale, key_bias=key_bias(g))[0].transpose(1, 2)

    forms = {"math (float mask with grad)": math, "flash, bias as a key channel (key_bias_attention)": keys}
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
