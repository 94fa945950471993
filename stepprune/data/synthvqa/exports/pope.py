"""POPE (COCO) layout (``existence`` questions, one file per negative-sampling subfamily)::

    pope/coco/coco_pope_{random,popular,adversarial}.json   JSON Lines {question_id, image, text, label}
    pope/val2014/COCO_val2014_<12-digit id>.jpg

question_id counts from 1 within each file (LLaVA's pinned POPE version). Each file holds the balanced yes/no
pairs of its subfamily in native order; LLaVA's eval_pope zips answers with these lines positionally.
"""

from __future__ import annotations

from stepprune.data.synthvqa.exports.common import ExportContext, coco_file_name
from stepprune.data.synthvqa.files import write_bytes
from stepprune.data.synthvqa.native import dumps

NAME = "pope"
CATEGORIES = ("random", "popular", "adversarial")


def export(ctx: ExportContext) -> int:
    """Write the POPE layout under ``ctx.root / "pope"``; returns the number of questions (all files)."""
    out = ctx.root / NAME
    total = 0
    for cat in CATEGORIES:
        lines = []
        for i, q in enumerate((q for q in ctx.of_families("existence") if q["subfamily"] == cat), start=1):
            name = coco_file_name(ctx.scenes[q["image_id"]])
            ctx.write_image(q["image_id"], out / "val2014" / name)
            row = {"question_id": i, "image": name, "text": q["question"], "label": q["answer"]}
            lines.append(dumps(row))
            ctx.record(NAME, f"{cat}/{i}", q, image=f"val2014/{name}")
        write_bytes(out / "coco" / f"coco_pope_{cat}.json", "".join(line + "\n" for line in lines).encode())
        total += len(lines)
    return total
