"""Evaluate one method (with its config and budget) on one benchmark folder with one backbone.

    python jobs/evaluate.py backbone.path=checkpoints/synthvqa-llava-tiny method.name=random budget=64 \
        benchmark.name=synthvqa benchmark.folder=data/synthvqa/native/test

A trained selector: ``method.name=stepprune method.checkpoint=runs/embedded/final/selector``.
Writes predictions (JSONL + Parquet) and summary.json under ``output/``, and logs both to MLflow.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import parse  # noqa: E402
from pipeline.eval_config import EvalJobConfig  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = parse(EvalJobConfig, argv, None, "Evaluate one method on one benchmark.")
    from pipeline.evaluate_job import run

    summary = run(cfg)
    print(json.dumps({k: summary[k] for k in ("benchmark", "headline_key", "headline", "items", "kept_mean",
                                              "latency_ms_median", "token_recall", "output", "mlflow_run_id")},
                     indent=2))


if __name__ == "__main__":
    main()
