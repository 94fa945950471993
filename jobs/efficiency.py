"""The paper's Table 3 for any backbone, methods and budgets: visual tokens, TFLOPs (counted on the meta device at
the real model size), measured time to first token and the speed-up against vanilla in the same run.

    python jobs/efficiency.py --config jobs/configs/efficiency_llava15_7b_flops.yaml     # CPU, seconds
    python jobs/efficiency.py --config jobs/configs/efficiency_llava15_7b_h100.yaml      # GPU: FLOPs + latency
    python jobs/efficiency.py --config jobs/configs/efficiency_tiny_cpu.yaml latency.repeats=5

Writes table.md, table.csv and rows.json under ``output/name/`` and logs them to MLflow; prints the table and the
target checks.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import parse  # noqa: E402
from pipeline.efficiency_config import EfficiencyJobConfig  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = parse(EfficiencyJobConfig, argv, "jobs/configs/efficiency_llava15_7b_flops.yaml",
                "Visual tokens, TFLOPs, latency and speed-up of pruning methods (Table 3).")
    from pipeline.efficiency import run

    out = run(cfg)
    print(out["table"])
    print()
    print("\n".join(out["checks"]))
    print(f"\noutput: {out['output']}   mlflow run: {out['mlflow_run_id']}")


if __name__ == "__main__":
    main()
