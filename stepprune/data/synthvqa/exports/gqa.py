"""GQA testdev-balanced layout (``attribute`` and ``relation`` questions)::

    gqa/testdev_balanced_questions.json   {qid: {question, answer, fullAnswer, imageId, isBalanced: true,
                                                 types, groups, semantic, semanticStr, entailed,
                                                 equivalent, annotations}}
    gqa/images/<imageId>.jpg

qid = the native qid, imageId = the native image id.
"""

from __future__ import annotations

from typing import Any

from stepprune.data.synthvqa.exports.common import ExportContext
from stepprune.data.synthvqa.files import write_json

NAME = "gqa"
FAMILIES = ("attribute", "relation")


def _semantic_str(program: list[dict[str, Any]]) -> str:
    steps = []
    for op in program:
        deps = f" {op['dependencies']}" if op["dependencies"] else ""
        steps.append(f"{op['operation']}: {op['argument']}{deps}")
    return "->".join(steps)


def export(ctx: ExportContext) -> int:
    """Write the GQA layout under ``ctx.root / "gqa"``; returns the number of questions."""
    out = ctx.root / NAME
    data: dict[str, Any] = {}
    for q in ctx.of_families(*FAMILIES):
        image = f"images/{q['image_id']}.jpg"
        ctx.write_image(q["image_id"], out / image)
        program = q["extra"]["program"]
        is_attr = q["family"] == "attribute"
        data[q["qid"]] = {
            "question": q["question"],
            "answer": q["answer"],
            "fullAnswer": q["extra"]["full_answer"],
            "imageId": q["image_id"],
            "isBalanced": True,
            "types": {"structural": "query" if is_attr else "choose",
                      "semantic": "attr" if is_attr else "rel",
                      "detailed": f"{q['subfamily']}{'Query' if is_attr else 'Choose'}"},
            "groups": {"global": None, "local": f"{q['family']}-{q['subfamily']}"},
            "semantic": program,
            "semanticStr": _semantic_str(program),
            "entailed": [],
            "equivalent": [q["qid"]],
            "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
        }
        ctx.record(NAME, q["qid"], q, image=image)
    write_json(out / "testdev_balanced_questions.json", data)
    return len(data)
