"""Run the evaluation matrix (backbones x methods x budgets x benchmarks) on Ray and write the paper's tables.

Embedded default (SynthVQA test split, committed tiny backbone, CPU):

    python jobs/eval_matrix.py

Any matrix:  python jobs/eval_matrix.py --config jobs/configs/matrix_llava15_7b.yaml
Re-running skips finished cells. Tables land in ``<output>/tables/`` (Markdown, LaTeX, CSV, Fig. 4 PNGs).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import parse  # noqa: E402
from pipeline.eval_config import MatrixConfig  # noqa: E402

DEFAULT = str(Path(__file__).resolve().parent / "configs" / "matrix_synthvqa.yaml")


def main(argv: list[str] | None = None) -> None:
    cfg = parse(MatrixConfig, argv, DEFAULT, "Run the evaluation matrix and write the result tables.")
    from pipeline.cluster import init_ray
    from pipeline.eval_matrix import run

    init_ray(cfg.ray, use_gpu=cfg.actors.num_gpus > 0)
    result = run(cfg)
    print(result["tables"]["table1.md"])
    if result["failed"]:
        print(f"{len(result['failed'])} cells failed:", *[f"  {p}: {e}" for p, e in result["failed"]], sep="\n")
    print(f"tables in {result['output']}/tables; MLflow parent run {result['mlflow_run_id']}; "
          f"{result['seconds'] / 60:.1f} min")
    sys.exit(1 if result["failed"] else 0)


if __name__ == "__main__":
    main()
