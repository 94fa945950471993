"""Prints, for every registered method, where it acts, whether it reads the prompt, whether it is training-free,
its position convention, the visual tokens that actually enter each LLM layer at prefill at one budget (default
64) on the tiny LLaVA-shaped backbone (576 visual tokens; 4 LLM layers, or ``--text-layers 32`` for LLaVA-1.5-7B's
depth), and the visual KV entries left in each layer's cache after ``--max-new-tokens`` greedy tokens (lower than
the prefill counts only for decode-time methods; with untrained weights a learned method shows its initial
behaviour, e.g. DyRate-style keeps everything until its predictor is trained).

    python jobs/report_layer_tokens.py [--budget 64] [--text-layers 4] [--max-new-tokens 8]

Imports only ``stepprune``; builds the tiny backbone offline in a temporary folder (random weights: the counts are
what matters, not the answers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

import stepprune  # noqa: E402
from stepprune.backbones.tiny import TinyLlavaSpec, build_tiny_llava  # noqa: E402


def run_lengths(counts: list[int]) -> str:
    """``[576, 576, 64, 64]`` -> ``"576x2, 64x2"``."""
    out: list[list[int]] = []
    for c in counts:
        if out and out[-1][0] == c:
            out[-1][1] += 1
        else:
            out.append([c, 1])
    return ", ".join(f"{c}x{n}" if n > 1 else str(c) for c, n in out)


def positions(method: stepprune.PruningMethod) -> str:
    """The position convention of the kept tokens, in words."""
    if method.hook_point == "decode":
        return "original (evicted KV entries leave gaps)"
    if method.hook_point == "in_llm":
        if method.config.positions == "original":
            return "original (gaps)"
        return "contiguous (re-indexed per stage)"
    return method.position_mode_for("llava")


def report(budget: int = 64, text_layers: int = 4, seed: int = 0, max_new_tokens: int = 8,
           configs: dict[str, dict] | None = None) -> list[dict]:
    """One row per registered method: its properties, sample 0's visual tokens entering each LLM layer at prefill
    and those left cached at the end of generation. ``configs`` overrides a method's config by name."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        adapter = stepprune.load_backbone(build_tiny_llava(tmp, TinyLlavaSpec(text_layers=text_layers), seed=seed))
        prompt = adapter.prepare([image], ["What color is the square?"])
        for name, cls in sorted(stepprune.METHODS.items()):
            cfg = (configs or {}).get(name, {"budget": budget} if cls.budgeted else {})
            method = stepprune.build_method(name, cfg)
            out = stepprune.PrunedVLM(adapter, method).generate(prompt, max_new_tokens=max_new_tokens)
            rows.append({
                "method": name,
                "hook point": cls.hook_point,
                "uses text": "yes" if cls.uses_text else "no",
                "training-free": "yes" if cls.training_free else "no",
                "positions": positions(method),
                "per_layer": out.visual_per_layer[0].tolist(),
                "cached_at_end": out.cached_visual_per_layer[0].tolist(),
                "generated": int(out.tokens.shape[1]),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    rows = report(args.budget, args.text_layers, max_new_tokens=args.max_new_tokens)
    head = ["method", "hook point", "uses text", "training-free", "positions",
            f"visual tokens entering LLM layers 0..{args.text_layers - 1} at prefill (budget {args.budget})",
            "visual KV entries cached per layer at the end of generation"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        shown = [str(v) if len(v) <= 8 else run_lengths(v) for v in (r["per_layer"], r["cached_at_end"])]
        cells = [r["method"], r["hook point"], r["uses text"], r["training-free"], r["positions"], *shown]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
