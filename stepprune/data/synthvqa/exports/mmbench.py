"""MMBench-EN dev layout (``mc_mmbench`` questions)::

    mmbench_en/mmbench_dev_20230712.tsv   tab-separated, columns index, question, hint, A, B, C, D, answer,
                                           category, image (base64 JPEG), source, l2-category, comment, split

Each question is a base row (index 0, 1, ...) followed by its circular copies, as in the real dev TSV: copy k
(k = 1 .. n_options - 1) has index ``base + k * 1_000_000`` and the options rotated by k (option i of the copy
is option ``(i + k) % n`` of the base), with the answer letter moved along. Empty cells stand for NaN.
"""

from __future__ import annotations

import base64
import csv

from stepprune.data.synthvqa.exports.common import ExportContext, sha1
from stepprune.data.synthvqa.prompts import LETTERS

NAME = "mmbench"
FOLDER = "mmbench_en"
FILE = "mmbench_dev_20230712.tsv"
COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
           "l2-category", "comment", "split")
CIRCULAR_STRIDE = 1_000_000
L2_CATEGORY = {
    "attribute_recognition": "finegrained_perception (instance-level)",
    "object_localization": "finegrained_perception (instance-level)",
    "ocr": "finegrained_perception (instance-level)",
    "spatial_relationship": "finegrained_perception (cross-instance)",
}


def rotate(choices: list[str], k: int) -> list[str]:
    """Options of circular copy ``k``."""
    return [choices[(i + k) % len(choices)] for i in range(len(choices))]


def export(ctx: ExportContext) -> int:
    """Write the MMBench TSV under ``ctx.root / "mmbench_en"``; returns its row count (with copies)."""
    out = ctx.root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out / FILE, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for base, q in enumerate(ctx.of_families("mc_mmbench")):
            data = ctx.image_bytes(q["image_id"], "JPEG")
            image_b64 = base64.b64encode(data).decode("ascii")
            correct = q["choices"][LETTERS.index(q["answer"])]
            for k in range(len(q["choices"])):
                opts = rotate(q["choices"], k)
                cells = opts + [""] * (4 - len(opts))
                index = base + k * CIRCULAR_STRIDE
                answer = LETTERS[opts.index(correct)]
                writer.writerow([index, q["question"], "", *cells, answer, q["subfamily"], image_b64,
                                 "synthvqa", L2_CATEGORY[q["subfamily"]], "", "dev"])
                ctx.record(NAME, index, q, image_sha1=sha1(data))
                n += 1
    return n
