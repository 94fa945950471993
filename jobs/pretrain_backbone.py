"""Pretrain the embedded default backbone (``checkpoints/synthvqa-llava-tiny``) from scratch on SynthVQA, measure
it and write its model card.

    python jobs/pretrain_backbone.py                                   # the committed recipe, CPU, local Ray
    python jobs/pretrain_backbone.py scaling.use_gpu=true              # the same on one GPU
    python jobs/pretrain_backbone.py storage.name=try2 output=/tmp/bb  # a fresh run elsewhere

Re-running with the same ``storage.name`` resumes from the latest checkpoint under ``runs/ray/<name>``; use a new
name (or delete ``runs/<name>`` and ``runs/ray/<name>``) to start over. On a cluster::

    ray job submit --working-dir . -- python jobs/pretrain_backbone.py scaling.use_gpu=true
"""

import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from pipeline.cli import parse  # noqa: E402
from pipeline.pretrain_config import PretrainJobConfig  # noqa: E402

DEFAULT_CONFIG = str(Path(__file__).resolve().parent / "configs" / "pretrain_backbone.yaml")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse(PretrainJobConfig, argv, DEFAULT_CONFIG, "Pretrain the SynthVQA LLaVA backbone from scratch.")
    from pipeline.backbone_pretrain_job import run

    command = " ".join(["python jobs/pretrain_backbone.py", *(shlex.quote(a) for a in argv)])
    config_file = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else "jobs/configs/pretrain_backbone.yaml"
    print(json.dumps(run(cfg, command=command, config_file=config_file), indent=2))


if __name__ == "__main__":
    main()
