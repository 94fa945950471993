"""The library entry point: generate every split and write all formats plus ``manifest.json``::

    <out_dir>/
      manifest.json                 seed, generator version, config, counts per split / family / benchmark
      native/<split>/               questions.jsonl, scenes.jsonl, images/   (see native.py)
      llava_instruct/               synthvqa_<split>.json, images/          (see export_llava.py)
      benchmarks/<split>/<bench>/   each real benchmark's layout, + id_map.jsonl (see exports/)

The manifest holds no timings or absolute paths, so the same config gives a byte-identical manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing as mp
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepprune.data.synthvqa.config import SPLITS, SynthVQAConfig
from stepprune.data.synthvqa.export_llava import export_llava
from stepprune.data.synthvqa.exports import export_benchmarks
from stepprune.data.synthvqa.files import write_json
from stepprune.data.synthvqa.native import NativeWriter, write_image
from stepprune.data.synthvqa.sample import make_sample, question_records, scene_record
from stepprune.data.synthvqa.vocab import EVIDENCE_MIN_COVERAGE, GRID, IMAGE_SIZE, PATCH_SIZE

GENERATOR_VERSION = "1.0.0"
MANIFEST = "manifest.json"
NATIVE, LLAVA, BENCHMARKS = "native", "llava_instruct", "benchmarks"
_CHUNK = 32


def _draw(cfg: SynthVQAConfig, split: str, split_dir: Path, index: int) -> tuple[dict, list[dict]]:
    # Runs in a worker: the PNG is written there, only the (small) records travel back.
    sample = make_sample(cfg, split, index)
    write_image(sample, split_dir)
    return scene_record(sample), question_records(sample)


def _records(cfg: SynthVQAConfig, split: str, split_dir: Path) -> Iterator[tuple[dict, list[dict]]]:
    work = functools.partial(_draw, cfg, split, split_dir)
    indices = range(cfg.n_images(split))
    if cfg.num_workers == 1:
        yield from map(work, indices)
        return
    # fork is cheap and safe here (no threads are running yet); spawn elsewhere. imap keeps index order, so
    # the files do not depend on the number of workers.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(cfg.num_workers) as pool:
        yield from pool.imap(work, indices, chunksize=_CHUNK)


def generate_split(cfg: SynthVQAConfig, split: str, split_dir: str | Path) -> dict[str, Any]:
    """Write one native split folder; returns its manifest entry (counts and complexity summary)."""
    split_dir = Path(split_dir)
    families: Counter[str] = Counter()
    subfamilies: Counter[str] = Counter()
    n_objects, fg = [], []
    n_questions = 0
    with NativeWriter(split_dir) as writer:
        for scene, questions in _records(cfg, split, split_dir):
            writer.add_records(scene, questions)
            n_questions += len(questions)
            families.update(q["family"] for q in questions)
            subfamilies.update(f"{q['family']}/{q['subfamily']}" for q in questions)
            n_objects.append(scene["stats"]["n_objects"])
            fg.append(scene["stats"]["fg_patch_fraction"])
    n = len(n_objects)
    return {
        "images": n,
        "questions": n_questions,
        "families": dict(sorted(families.items())),
        "subfamilies": dict(sorted(subfamilies.items())),
        "complexity": {
            "n_objects_min": min(n_objects, default=0), "n_objects_max": max(n_objects, default=0),
            "n_objects_mean": round(sum(n_objects) / n, 3) if n else 0.0,
            "fg_patch_fraction_min": min(fg, default=0.0), "fg_patch_fraction_max": max(fg, default=0.0),
            "fg_patch_fraction_mean": round(sum(fg) / n, 4) if n else 0.0,
        },
    }


def _prepare(out: Path, overwrite: bool) -> None:
    ours = [out / MANIFEST, out / NATIVE, out / LLAVA, out / BENCHMARKS]
    existing = [p for p in ours if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds SynthVQA output ({existing[0].name}); "
                              "pass overwrite=True")
    for p in existing:  # only what this generator writes; anything else in out_dir is left alone
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_synthvqa(out_dir: str | Path, config: SynthVQAConfig | None = None,
                      **overrides: Any) -> dict[str, Any]:
    """Generate SynthVQA into ``out_dir``: native splits, LLaVA-Instruct corpus, benchmark layouts, manifest.

    Args:
        out_dir: output folder (created if missing).
        config: the configuration; defaults to :class:`SynthVQAConfig`'s defaults.
        **overrides: fields of :class:`SynthVQAConfig` to replace, e.g. ``seed=1, n_train_images=100``.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        FileExistsError: ``out_dir`` already holds SynthVQA output and ``overwrite`` is False.
    """
    cfg = dataclasses.replace(config or SynthVQAConfig(), **overrides)
    out = Path(out_dir)
    _prepare(out, cfg.overwrite)
    manifest: dict[str, Any] = {
        "name": "synthvqa",
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "geometry": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "grid": GRID,
                     "n_patches": GRID * GRID, "evidence_min_coverage": EVIDENCE_MIN_COVERAGE,
                     "patch_index": "row * grid + col"},
        "splits": {}, "native": {}, "llava_instruct": {}, "benchmarks": {},
    }
    for split in SPLITS:
        split_dir = out / NATIVE / split
        manifest["splits"][split] = generate_split(cfg, split, split_dir)
        manifest["native"][split] = f"{NATIVE}/{split}"
        if split in cfg.llava_splits:
            n = export_llava(split_dir, out / LLAVA, split)
            manifest["llava_instruct"][split] = {"file": f"{LLAVA}/synthvqa_{split}.json", "conversations": n,
                                                 "image_folder": f"{LLAVA}/images"}
        if split in cfg.benchmark_splits:
            counts = export_benchmarks(split_dir, out / BENCHMARKS / split, split, cfg.jpeg_quality)
            manifest["benchmarks"][split] = {"root": f"{BENCHMARKS}/{split}", "items": counts}
    write_json(out / MANIFEST, manifest, indent=2)
    return manifest
