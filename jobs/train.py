"""Train a selector (StepPrune, or any trainable method) on a frozen backbone with Ray Train + DeepSpeed.

Local, embedded default (committed tiny backbone, SynthVQA generated on first use, CPU, local Ray, local MLflow):

    python jobs/train.py

Another config, with dotted overrides:

    python jobs/train.py --config jobs/configs/llava15_7b_paper.yaml train.max_steps=2000

On a cluster (``ray start --head`` or ``ray up ray_cluster.yaml``):

    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/llava15_7b_paper.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import parse  # noqa: E402
from pipeline.config import TrainJobConfig  # noqa: E402

DEFAULT = str(Path(__file__).resolve().parent / "configs" / "embedded.yaml")


def main(argv: list[str] | None = None) -> None:
    cfg = parse(TrainJobConfig, argv, DEFAULT, "Train a pruning selector on a frozen backbone.")
    from pipeline.config_loader import ConfigError
    from pipeline.train_job import run

    try:
        summary = run(cfg)
    except ConfigError as e:  # e.g. a run name trained under another config: say so without a traceback
        sys.exit(f"config error: {e}")
    print(summary.render(), flush=True)


if __name__ == "__main__":
    main()
