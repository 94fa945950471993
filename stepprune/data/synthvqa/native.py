"""The native SynthVQA format, one folder per split::

    <split>/
      questions.jsonl   one question per line (fields below), images in index order, questions in asked order
      scenes.jsonl      one scene per line: Scene fields + per-element visible geometry + complexity stats
      images/<image_id>.png   192x192 RGB, lossless

``questions.jsonl`` fields: ``qid``, ``image_id``, ``image`` (path relative to the split folder), ``split``,
``family``, ``subfamily``, ``benchmark`` (the benchmark it mirrors), ``question`` (bare text), ``prompt``
(LLaVA-1.5 prompt string), ``answer``, ``choices`` (option texts or null), ``hint``, ``ocr_tokens``,
``pair_id``, ``referents`` (element ids), ``evidence`` (patch indices row*24+col), ``scene_stats``, ``extra``.

:mod:`stepprune.benchmarks.synthvqa` reads this format for evaluation; the exporters read it back to write the
LLaVA-Instruct corpus and the real benchmarks' layouts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepprune.data.synthvqa.sample import Sample, question_records, scene_record

QUESTIONS_FILE = "questions.jsonl"
SCENES_FILE = "scenes.jsonl"
IMAGES_DIR = "images"
PNG_COMPRESS_LEVEL = 3  # ~25% faster than PIL's default 6 for ~10% larger files; lossless either way


def dumps(record: dict[str, Any]) -> str:
    """One compact JSON line (key order kept, so files are byte-identical for identical inputs)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def write_image(sample: Sample, split_dir: Path) -> None:
    """Write a sample's PNG into ``split_dir/images`` (safe to call from worker processes)."""
    sample.rendered.to_pil().save(split_dir / sample.image_file, format="PNG",
                                  compress_level=PNG_COMPRESS_LEVEL)


class NativeWriter:
    """Appends samples to one split folder. Use as a context manager."""

    def __init__(self, split_dir: str | Path):
        self.dir = Path(split_dir)
        (self.dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        self._q = open(self.dir / QUESTIONS_FILE, "w", encoding="utf-8")
        self._s = open(self.dir / SCENES_FILE, "w", encoding="utf-8")

    def add_records(self, scene: dict[str, Any], questions: list[dict[str, Any]]) -> None:
        """Write one image's rows (its PNG is written separately by :func:`write_image`)."""
        self._s.write(dumps(scene) + "\n")
        for q in questions:
            self._q.write(dumps(q) + "\n")

    def add(self, sample: Sample) -> None:
        """Write one sample: PNG and rows."""
        write_image(sample, self.dir)
        self.add_records(scene_record(sample), question_records(sample))

    def close(self) -> None:
        self._q.close()
        self._s.close()

    def __enter__(self) -> NativeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSON Lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_questions(split_dir: str | Path) -> list[dict[str, Any]]:
    """All ``questions.jsonl`` rows of a split folder."""
    return list(read_jsonl(Path(split_dir) / QUESTIONS_FILE))


def read_scenes(split_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``scenes.jsonl`` rows of a split folder, by image id (in file order)."""
    return {s["image_id"]: s for s in read_jsonl(Path(split_dir) / SCENES_FILE)}
