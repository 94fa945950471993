"""ScienceQA layout (``mc_science`` questions)::

    scienceqa/problems.json     {pid: {question, choices, answer (int index), hint, image: "image.png", task,
                                       grade, subject, topic, category, skill, lecture, solution, split}}
    scienceqa/pid_splits.json   {train, val, test, trainval, minitrain, minival, minitest: [pid, ...]}
    scienceqa/images/<split>/<pid>/image.png   (lossless: links to the native PNGs)

pids count from 1 (as strings). The native split names the ScienceQA split: a val export fills "val" (and
"trainval", "minival"), a test export "test" (and "minitest").
"""

from __future__ import annotations

from typing import Any

from stepprune.data.synthvqa.exports.common import ExportContext
from stepprune.data.synthvqa.files import write_json
from stepprune.data.synthvqa.prompts import LETTERS

NAME = "scienceqa"
SPLIT_KEYS = ("train", "val", "test", "trainval", "minitrain", "minival", "minitest")


def export(ctx: ExportContext) -> int:
    """Write the ScienceQA layout under ``ctx.root / "scienceqa"``; returns the number of problems."""
    out = ctx.root / NAME
    split = ctx.split if ctx.split in ("val", "test") else "train"
    problems: dict[str, Any] = {}
    for i, q in enumerate(ctx.of_families("mc_science"), start=1):
        pid = str(i)
        image = f"images/{split}/{pid}/image.png"
        ctx.write_image(q["image_id"], out / image)
        problems[pid] = {
            "question": q["question"],
            "choices": list(q["choices"]),
            "answer": LETTERS.index(q["answer"]),
            "hint": q["hint"] or "",
            "image": "image.png",
            "task": "closed choice",
            "grade": "grade4",
            "subject": "natural science",
            "topic": "synthvqa",
            "category": q["subfamily"],
            "skill": q["subfamily"],
            "lecture": "",
            "solution": q["extra"].get("solution", ""),
            "split": split,
        }
        ctx.record(NAME, pid, q, image=image)
    pids = list(problems)
    splits = {key: [] for key in SPLIT_KEYS}
    splits[split] = pids
    splits["mini" + split] = pids
    if split in ("train", "val"):
        splits["trainval"] = pids
    write_json(out / "problems.json", problems)
    write_json(out / "pid_splits.json", splits)
    return len(problems)
