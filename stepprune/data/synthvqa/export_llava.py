"""Native split -> LLaVA-Instruct conversations (the format of LLaVA's ``llava_v1_5_mix665k.json``)::

    llava_instruct/
      synthvqa_<split>.json   [{"id": image_id, "image": "<image_id>.png",
                                "conversations": [{"from": "human", "value": "<image>\\n<prompt 1>"},
                                                  {"from": "gpt", "value": "<answer 1>"},
                                                  {"from": "human", "value": "<prompt 2>"}, ...]}, ...]
      images/<image_id>.png   (hard links to the native PNGs; pass this folder as LLaVA's --image_folder)

An image's questions are packed into multi-turn conversations, in native order, so one image encoding
supervises many answers (the feasibility study's "dense supervision" lesson). The two questions of a yes/no
pair (``existence``, ``mme``) always go to *different* conversations of the same image: together they would
leak each other's answer (the second of a pair is always the opposite of the first), a text-only shortcut that
evaluation, which asks every question alone, never offers. So an image with pairs has two conversations (ids
``<image_id>_c0`` and ``<image_id>_c1``; which one gets a pair's "yes" is fixed by a hash of the pair id), and
single questions alternate between them; an image without pairs has one (id ``<image_id>``). The prompts are
the native LLaVA-1.5 prompt strings, so training and evaluation see the same answer-format suffixes.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stepprune.data.synthvqa.files import link_or_copy
from stepprune.data.synthvqa.native import QUESTIONS_FILE, read_jsonl

IMAGE_TOKEN = "<image>"


def image_conversations(image_id: str, qs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The LLaVA-Instruct records of one image, from its native question rows (module docstring)."""
    groups: list[list[dict[str, Any]]] = [[], []]
    side: dict[str, int] = {}  # pair id -> conversation of its first question
    has_pairs = any(q.get("pair_id") for q in qs)
    singles = 0
    for q in qs:
        pid = q.get("pair_id")
        if pid:
            k = 1 - side[pid] if pid in side else zlib.crc32(pid.encode()) % 2
            side.setdefault(pid, k)
        else:
            k = singles % 2 if has_pairs else 0
            singles += 1
        groups[k].append(q)
    groups = [g for g in groups if g]
    out = []
    for c, group in enumerate(groups):
        turns = []
        for t, q in enumerate(group):
            prefix = f"{IMAGE_TOKEN}\n" if t == 0 else ""
            turns.append({"from": "human", "value": prefix + q["prompt"]})
            turns.append({"from": "gpt", "value": q["answer"]})
        rid = image_id if len(groups) == 1 else f"{image_id}_c{c}"
        out.append({"id": rid, "image": f"{image_id}.png", "conversations": turns})
    return out


def conversations(questions: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """LLaVA-Instruct records from native question rows, image by image (an image's rows are contiguous in
    ``questions.jsonl``; rows of an image seen again later would start a new group)."""
    for image_id, qs in itertools.groupby(questions, key=lambda q: q["image_id"]):
        yield from image_conversations(image_id, list(qs))


def export_llava(native_split_dir: str | Path, out_dir: str | Path, split: str) -> int:
    """Write ``out_dir/synthvqa_<split>.json`` and link its images into ``out_dir/images``.

    Streams: one image's questions are in memory at a time, so a 20k-image split needs no more memory than a
    small one.

    Returns:
        The number of conversations written.
    """
    src, out = Path(native_split_dir), Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out / f"synthvqa_{split}.json", "w", encoding="utf-8") as f:
        f.write("[")
        last_image = None
        for record in conversations(read_jsonl(src / QUESTIONS_FILE)):
            if record["image"] != last_image:
                link_or_copy(src / "images" / record["image"], out / "images" / record["image"])
                last_image = record["image"]
            f.write(("," if n else "") + json.dumps(record, ensure_ascii=False))
            n += 1
        f.write("]\n")
    return n
