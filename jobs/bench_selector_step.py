"""Measures the StepPrune selector's size and its inference decoder-step time on this machine (random weights).

Prints one JSON line per setting: the parameter counts at the LLaVA-1.5-7B setting (d=1024, 16 heads, 2 decoder
layers, d_v=1024 CLIP features, LLM width 4096 for W_t, K_max=192) and at the tiny test setting, then the median
seconds per inference decoder step at N=576 for each (width, batch).

    python jobs/bench_selector_step.py                    # 1 intra-op thread (stable on a shared machine)
    python jobs/bench_selector_step.py --threads 2 --batches 1 16 32 --device cuda --loops plain chunked graph

``--loops``: ``plain`` reads the stop flags after every step, ``chunked`` once per 16 steps (the eager default),
``graph`` replays 16-step chunks captured as CUDA graphs (CUDA only; the default there).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from stepprune.selector import StepPruneConfig  # noqa: E402
from stepprune.selector.profile import decoder_step_time, parameter_counts  # noqa: E402

SETTINGS = {
    # the spec's LLaVA-1.5-7B selector (Sec. 8): d = d_v = 1024, 16 heads, MLP 4x, 2 + 2 layers, W_t 4096 -> 1024
    "llava7b": StepPruneConfig(d=1024, heads=16, decoder_layers=2, d_tok=1024, d_llm=4096, token_group=1, k_max=192),
    # the Qwen2.5-VL-7B variant: 4 x 1280 concatenated patch features projected to d, LLM width 3584
    "qwen7b": StepPruneConfig(d=1024, heads=16, decoder_layers=2, d_tok=5120, d_llm=3584, token_group=4, k_max=192),
    # the tiny selector of the tests on the tiny LLaVA (d_v = 32, LLM width 32)
    "tiny": StepPruneConfig(d=32, heads=4, decoder_layers=2, d_tok=32, d_llm=32, token_group=1, k_max=24),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tokens", type=int, default=576)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timed", nargs="+", default=["llava7b", "tiny"], choices=sorted(SETTINGS))
    parser.add_argument("--loops", nargs="+", default=["chunked"], choices=["plain", "chunked", "graph"])
    args = parser.parse_args()
    for name, cfg in SETTINGS.items():
        print(json.dumps({"setting": name, "parameters": parameter_counts(cfg)}))
    for name in args.timed:
        for batch, loop in ((b, lp) for b in args.batches for lp in args.loops):
            out = decoder_step_time(SETTINGS[name], batch, args.tokens, args.steps, args.repeats, args.device,
                                    threads=args.threads, loop=loop)
            out["per_step_ms"] = round(out.pop("per_step_s") * 1e3, 3)
            out["memory_ms"] = round(out.pop("memory_s") * 1e3, 3)
            print(json.dumps({"setting": name, "device": args.device, **out}), flush=True)


if __name__ == "__main__":
    main()
