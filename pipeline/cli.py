"""Command-line parsing shared by every job: ``--config file.yaml`` plus ``dotted.key=value`` overrides."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TypeVar

from pipeline.config_loader import ConfigError, dump, load

T = TypeVar("T")


def parse(cls: type[T], argv: list[str] | None, default_config: str | None, description: str) -> T:
    """Parses ``argv`` into a typed config, exiting with a clear message on a config error."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 train.max_steps=50")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("STEPPRUNE_LOG", "WARNING"))
    try:
        cfg = load(cls, args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"config error: {e}\n")
    if args.print_config:
        import sys
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            dump(cfg, Path(tmp) / "c.yaml")
            sys.stdout.write((Path(tmp) / "c.yaml").read_text())
        parser.exit(0)
    return cfg


REPO = Path(__file__).resolve().parents[1]
COMMITTED_BACKBONE = REPO / "checkpoints" / "synthvqa-llava-tiny"


def synthvqa_bench_parser(description: str, folder: str = "data/synthvqa/native/val", items: int = 160,
                          threads: int = 2) -> argparse.ArgumentParser:
    """The arguments every SynthVQA diagnostic bench shares: ``--backbone`` (the committed one), ``--folder`` (a
    SynthVQA split with ``questions.jsonl``), ``--items`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backbone", default=str(COMMITTED_BACKBONE))
    parser.add_argument("--folder", default=folder, help="a SynthVQA split (questions.jsonl)")
    parser.add_argument("--items", type=int, default=items, help="questions read from --folder")
    parser.add_argument("--threads", type=int, default=threads)
    return parser


def require_synthvqa(parser: argparse.ArgumentParser, folder: str | Path) -> None:
    """Exits (status 2) with what to do when ``folder`` holds no SynthVQA ``questions.jsonl``."""
    if not (Path(folder) / "questions.jsonl").is_file():
        parser.exit(2, f"no SynthVQA questions in {folder}: run `python jobs/train.py` once (it generates "
                       "SynthVQA), or pass --folder\n")
