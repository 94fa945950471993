"""Prints StepPrune's inference-path latency ratios, each measured within one run: selector / pruned prefill,
fast loop / plain loop per step, pruned TTFT / vanilla TTFT (see :mod:`stepprune.efficiency.ratios`).

    python jobs/bench_efficiency_ratios.py                      # tiny LLaVA on CPU, 1 intra-op thread
    python jobs/bench_efficiency_ratios.py --backbone llava15_7b --device cuda --dtype bfloat16 --threads 0

``--backbone``: ``tiny`` (the committed tiny LLaVA when present, else built offline), ``tiny_qwen``, a real config
with random weights (``llava15_7b``, ``qwen2_5_vl_7b``) or a backbone folder. ``--selector`` takes StepPrune config
overrides as YAML (default: the tiny selector ``{d: 32, heads: 4}`` on a tiny backbone, whose LLM is 32 wide, else
the project default, d = 1024). ``--threads 0`` leaves torch's thread count alone.
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

import torch  # noqa: E402

from pipeline.efficiency import latency_backbone  # noqa: E402
from pipeline.efficiency_config import LatencyConfig  # noqa: E402
from stepprune.efficiency.ratios import measure_ratios  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--selector", default=None, help="StepPrune config overrides (YAML mapping)")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    lat = LatencyConfig(enabled=True, backbone=args.backbone, device=args.device, dtype=args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    selector = args.selector if args.selector is not None else (
        "{d: 32, heads: 4}" if args.backbone.startswith("tiny") else "{}")
    print(f"backbone {args.backbone}, selector {selector}, K = {args.k}, threads {torch.get_num_threads()}")
    with latency_backbone(lat) as adapter:
        rows = measure_ratios(adapter, yaml.safe_load(selector) or {}, args.k, args.batches,
                              prompt=lat.prompt, warmup=args.warmup, repeats=args.repeats)
    for r in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    print(f"\n| batch | selector / pruned prefill | {rows[0]['fast_loop']} loop / plain loop (per step) "
          f"| pruned TTFT / vanilla TTFT | vanilla / pruned TTFT |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['selector_over_pruned_prefill']:.3f} | {r['fast_over_plain_loop_per_step']:.3f} "
              f"| {r['pruned_over_vanilla_ttft']:.3f} | {1 / r['pruned_over_vanilla_ttft']:.2f}x |")


if __name__ == "__main__":
    main()
