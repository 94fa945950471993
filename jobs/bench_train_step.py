"""Measures selector-training throughput of one training worker: the job's model and DeepSpeed engine, no Ray.

Prints one JSON line: seconds per optimizer step, samples per second, peak GPU memory, the engine and its ZeRO
stage, for the job config given (its micro-batch and per-worker gradient accumulation), on SynthVQA training
conversations. See ``pipeline/train_bench.py`` for exactly what is timed.

    python jobs/bench_train_step.py                        # the embedded default: tiny backbone, CPU, ZeRO-2
    python jobs/bench_train_step.py --config jobs/configs/llava15_7b_paper.yaml --backbone llava15_7b \\
        --device cuda                                      # the paper's per-GPU step, random-weight LLaVA-1.5-7B

``--backbone NAME`` replaces ``backbone.path`` by a random-weight model at a real config
(``stepprune.efficiency.backbones.REAL_CONFIGS``) in the config's backbone dtype; dotted overrides as in every job.
It times the LM-loss step that trains the whole selector (``pipeline.config.SPEC_SINGLE_STAGE``: the embedded
config's warm start and stop-only stage are off unless the overrides put them back).
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
    parser.add_argument("--backbone", default=None, help="a real config name: random weights at its size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.micro_batch_size=8")
    args = parser.parse_args(argv)
    import torch

    device = torch.device(args.device)
    try:
        cfg = load(TrainJobConfig, args.config, SPEC_SINGLE_STAGE + args.overrides)
        # One worker doing what each of the job's workers does: the same micro-batch and accumulation.
        per_worker = cfg.train.micro_batch_size * cfg.grad_accum
        cfg = load(TrainJobConfig, args.config, SPEC_SINGLE_STAGE + args.overrides + [
            "scaling.num_workers=1", f"train.global_batch_size={per_worker}",
            f"scaling.use_gpu={str(device.type == 'cuda').lower()}"])
    except ConfigError as e:
        parser.exit(2, f"config error: {e}\n")
    from pipeline.train_bench import measure, random_backbone

    adapter = random_backbone(args.backbone, cfg, device) if args.backbone else None
    record = measure(cfg, device, adapter=adapter, steps=args.steps, warmup=args.warmup)
    record = {"config": Path(args.config).name, "backbone": args.backbone or cfg.backbone.path, **record}
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
