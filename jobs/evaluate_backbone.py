"""Per-family accuracy of a backbone on the SynthVQA test split, with all visual tokens (``vanilla``) and with
none (``blind``), through the project's own evaluation code. Generates the split on first use.

    python jobs/evaluate_backbone.py                                   # the committed backbone, 2,400 questions
    python jobs/evaluate_backbone.py backbone=path/to/folder eval.limit=400 output=runs/bb_eval.json
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import parse  # noqa: E402
from pipeline.pretrain_config import EvaluateBackboneConfig  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = parse(EvaluateBackboneConfig, argv, None, "Per-family SynthVQA accuracy of a backbone (vanilla, blind).")
    import torch

    from pipeline.backbone_eval import evaluate_backbone, family_table

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    report = evaluate_backbone(cfg.backbone, cfg.eval)
    print(f"{cfg.backbone}: {report['questions']} questions on {report['images']} images of {report['split']}")
    print(family_table(report))
    print(" ".join(f"{m}: {r['seconds']:.0f} s" for m, r in report["results"].items()))
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
