"""Build docs/results/synthvqa.md (tables and PNG figures) from the MLflow runs of the project's jobs.

    python jobs/report.py --config jobs/configs/report_synthvqa.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import parse  # noqa: E402
from pipeline.report_config import ReportConfig  # noqa: E402

DEFAULT = str(Path(__file__).resolve().parent / "configs" / "report_synthvqa.yaml")


def main(argv: list[str] | None = None) -> None:
    cfg = parse(ReportConfig, argv, DEFAULT, "Generate the results report from MLflow runs.")
    from pipeline.report import build

    text = build(cfg)
    print(text[: text.find("## Operating points")] if "## Operating points" in text else text)
    print(f"written: {cfg.output}")


if __name__ == "__main__":
    main()
