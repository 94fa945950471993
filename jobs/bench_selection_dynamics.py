"""Tracks what a trainable selector keeps while it trains: evidence recall against chance, per seed, no Ray.

Runs the training job's own model, engine and schedules in one process (``pipeline/selection_dynamics.py``) on
SynthVQA training conversations, and every ``--every`` steps measures the inference selection on held-out SynthVQA
questions that record their evidence patches. Prints one table per seed and one JSON line per measurement.

    python jobs/bench_selection_dynamics.py --steps 100 --every 20 --seeds 0,1 \\
        method.config.per_sample_k=true method.config.tau=0.3 method.config.k_max=32

Dotted overrides as in every job; ``train.max_steps`` is set to ``--steps`` so the schedules run their course.
The embedded config's warm start and stop-only stage are off here (``pipeline.config.SPEC_SINGLE_STAGE``): the
bench follows the LM loss training the whole selector; overrides such as ``train.trainable=[decoder.stop]
train.init_selector=<folder>`` put them back.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.config import SPEC_SINGLE_STAGE, TrainJobConfig  # noqa: E402
from pipeline.config_loader import ConfigError, load  # noqa: E402

DEFAULT = str(Path(__file__).resolve().parent / "configs" / "embedded.yaml")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per seed")
    parser.add_argument("--every", type=int, default=20, help="measure after every this many steps")
    parser.add_argument("--seeds", default="0,1", help="initialisation seeds, comma-separated")
    parser.add_argument("--items", type=int, default=128, help="held-out questions measured (from eval.folder)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.config.tau=0.3")
    args = parser.parse_args(argv)
    try:
        cfg = load(TrainJobConfig, args.config, SPEC_SINGLE_STAGE + args.overrides)
        cfg = load(TrainJobConfig, args.config, SPEC_SINGLE_STAGE + args.overrides + [
            "scaling.num_workers=1", f"train.global_batch_size={cfg.train.micro_batch_size * cfg.grad_accum}",
            "scaling.use_gpu=false", f"train.max_steps={args.steps}"])
    except ConfigError as e:
        parser.exit(2, f"config error: {e}\n")
    import torch

    from pipeline.selection_dynamics import run
    from pipeline.train_bench import one_rank_group
    from stepprune.benchmarks import get_benchmark

    if not (Path(cfg.eval.folder) / "questions.jsonl").is_file():
        parser.exit(2, f"no SynthVQA questions in {cfg.eval.folder}: run `python jobs/train.py` once (it generates "
                       "SynthVQA), or point eval.folder at a SynthVQA split\n")
    if cfg.train.threads_per_worker:
        torch.set_num_threads(cfg.train.threads_per_worker)
    items = get_benchmark("synthvqa").load(cfg.eval.folder, limit=args.items)
    # One process group for every seed: DeepSpeed keeps its groups across engines, so it must not be rebuilt.
    with one_rank_group(torch.device("cpu")):
        for seed in (int(x) for x in args.seeds.split(",")):
            print(f"seed {seed}: step  lm_loss  K_train  g on S  g off S  K_kept  evidence recall  chance  "
                  "recall/chance", flush=True)
            for r in run(cfg, items, steps=args.steps, every=args.every, seed=seed):
                nan = float("nan")
                print(f"        {r['step']:5d}  {r.get('lm_loss', nan):7.3f}  {r.get('K_train', nan):7.1f}"
                      f"  {r.get('g_selected', nan):6.3f}  {r.get('g_rest', nan):7.3f}"
                      f"  {r['K']:6.1f}  {100 * r['recall']:14.1f}%"
                      f"  {100 * r['chance']:5.1f}%  {r['recall'] / r['chance']:13.2f}", flush=True)
                print(json.dumps({"seed": seed, **r}), flush=True)


if __name__ == "__main__":
    main()
