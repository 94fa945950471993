"""MME layout (``mme`` pairs), flat subtask folders as in the release::

    mme/MME_Benchmark_release_version/<subtask>/<image_id>.jpg
    mme/MME_Benchmark_release_version/<subtask>/<image_id>.txt
        two lines "<question> Please answer yes or no.\\t<Yes|No>"

Subtasks: existence, count, position, color, OCR. Each image holds one pair, the "Yes" line first.
"""

from __future__ import annotations

from collections import defaultdict

from stepprune.data.synthvqa.exports.common import ExportContext
from stepprune.data.synthvqa.files import write_bytes
from stepprune.data.synthvqa.prompts import MME_SUFFIX

NAME = "mme"
ROOT = "MME_Benchmark_release_version"


def export(ctx: ExportContext) -> int:
    """Write the MME layout under ``ctx.root / "mme"``; returns the number of questions."""
    out = ctx.root / NAME / ROOT
    pairs: dict[str, list] = defaultdict(list)
    for q in ctx.of_families("mme"):
        pairs[q["pair_id"]].append(q)
    n = 0
    seen: set[tuple[str, str]] = set()
    for pair_id, qs in pairs.items():
        subtask, image_id = qs[0]["subfamily"], qs[0]["image_id"]
        # MME's scorer pairs consecutive lines of one file: exactly one yes/no pair per image and subtask.
        if len(qs) != 2 or (subtask, image_id) in seen or [q["answer"] for q in qs] != ["yes", "no"]:
            raise ValueError(f"{ctx.native_dir}: MME pair {pair_id} is not one yes/no pair per image "
                             "and subtask")
        seen.add((subtask, image_id))
        ctx.write_image(image_id, out / subtask / f"{image_id}.jpg")
        lines = []
        for k, q in enumerate(qs):
            lines.append(f"{q['question']}{MME_SUFFIX}\t{q['answer'].capitalize()}\n")
            ctx.record(NAME, f"{subtask}/{image_id}.jpg#{k}", q, image=f"{ROOT}/{subtask}/{image_id}.jpg")
        write_bytes(out / subtask / f"{image_id}.txt", "".join(lines).encode())
        n += len(qs)
    return n
