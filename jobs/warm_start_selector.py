"""Warm start of the StepPrune selector from a teacher (evidence labels: a diagnostic; saliency: label-free).

Builds the selector of the job config (with the same dotted overrides as ``jobs/train.py``), trains its encoder and
first pointer step to point at each question's teacher patches, and saves a checkpoint
(``stepprune/selector/evidence_warm_start.py``, ``pipeline/evidence_warm_start.py``). ``--teacher evidence`` (the
default) points at SynthVQA's evidence labels; ``--teacher saliency`` is label-free: the top ``--teacher-k`` patches
by the frozen LM's answer-NLL gradient on a uniform gate, what the training job's ``train.warm_start`` stage runs
before its LM-loss steps. Measure it with
``jobs/bench_selection_headroom.py --selectors``; fine-tune it with the LM loss with
``python jobs/train.py <same overrides> train.warm_start=null train.init_selector=<out>``.

    python jobs/warm_start_selector.py --steps 300 --out runs/warm_start/selector \\
        method.config.text_attention=split method.config.input_norm=true method.config.init_std=0.088
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import require_synthvqa  # noqa: E402
from pipeline.config import TrainJobConfig  # noqa: E402
from pipeline.config_loader import ConfigError, load  # noqa: E402

DEFAULT = str(Path(__file__).resolve().parent / "configs" / "embedded.yaml")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT)
    parser.add_argument("--folder", default="data/synthvqa/native/train", help="SynthVQA questions with evidence")
    parser.add_argument("--items", type=int, default=4000, help="questions read from --folder")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", default="evidence", choices=["evidence", "saliency"],
                        help="evidence: SynthVQA's labels; saliency: label-free, the LM's answer-NLL gradient")
    parser.add_argument("--teacher-k", type=int, default=16, help="patches per question (saliency teacher)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for jobs/train.py")
    args = parser.parse_args(argv)
    try:
        cfg = load(TrainJobConfig, args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"config error: {e}\n")
    require_synthvqa(parser, args.folder)
    import torch

    from pipeline.evidence_warm_start import warm_start
    from stepprune.benchmarks import get_benchmark

    torch.set_num_threads(args.threads)
    items = get_benchmark("synthvqa").load(args.folder, limit=args.items)
    out = warm_start(cfg, items, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     teacher=args.teacher, teacher_k=args.teacher_k)
    print(f"[warm-start] saved {out}", flush=True)


if __name__ == "__main__":
    main()
