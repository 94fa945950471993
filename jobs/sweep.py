"""Sweep StepPrune's knobs (lambda, beta, gamma, tau) with Ray Tune; every trial is a full Ray Train run.

Embedded default (>= 4 trials on SynthVQA with the committed backbone, CPU):

    python jobs/sweep.py

An operating point of the paper (mean K ~ 64 of 576), on SynthVQA or on LLaVA-1.5-7B (a GPU cluster):

    python jobs/sweep.py --config tune_spaces/synthvqa_k64.yaml
    python jobs/sweep.py --config tune_spaces/llava15_7b_k64.yaml

Re-running with the same ``name`` restores the sweep. It prints the trial table and the chosen setting, and writes
``<storage_root>/<name>/best_train.yaml`` (train it with ``python jobs/train.py --config <that file>``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import parse  # noqa: E402
from pipeline.tune_space import TuneSpace  # noqa: E402

DEFAULT = str(Path(__file__).resolve().parents[1] / "tune_spaces" / "embedded.yaml")


def main(argv: list[str] | None = None) -> None:
    space = parse(TuneSpace, argv, DEFAULT, "Sweep a trainable selector's hyper-parameters with Ray Tune.")
    from pipeline.cluster import init_ray
    from pipeline.config import TrainJobConfig
    from pipeline.config_loader import load
    from pipeline.sweep import run
    from pipeline.tune_space import validate_space

    validate_space(space)
    init_ray(space.ray, load(TrainJobConfig, space.base_config).scaling.use_gpu, extra_cpus=1)  # trial drivers
    out = run(space)
    print("\n" + out["table"], flush=True)
    print(f"best setting ({out['best_metrics'].get(space.metric)} {space.metric}): {out['best_params']}")
    print(f"ready-to-use training config: {out['best_yaml']}")
    print(f"MLflow parent run {out['mlflow_run_id']}; {out['concurrency']} trial(s) at a time; "
          f"{out['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
