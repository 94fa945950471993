"""VQAv2 val2014 layout (``counting`` and ``attribute`` questions), the split that has local answers::

    vqav2/v2_OpenEnded_mscoco_val2014_questions.json   {info, task_type, data_type, data_subtype, license,
                                                         questions: [{image_id, question, question_id}]}
    vqav2/v2_mscoco_val2014_annotations.json           {info, license, data_subtype,
                                                         annotations: [{question_id, image_id,
                                                         question_type, answer_type,
                                                         multiple_choice_answer, answers: 10 x {answer,
                                                         answer_confidence, answer_id}}]}
    vqav2/val2014/COCO_val2014_<12-digit image_id>.jpg

image_id = split code * 10^6 + index; question_id = image_id * 1000 + the question's position in its image
(the COCO convention). All 10 human answers are the gold answer, so soft accuracy is 1 or 0.
"""

from __future__ import annotations

from typing import Any

from stepprune.data.synthvqa.exports.common import (
    ExportContext,
    coco_file_name,
    coco_image_id,
    question_index,
)
from stepprune.data.synthvqa.files import write_json

NAME = "vqav2"
FAMILIES = ("counting", "attribute")
N_ANSWERS = 10
_INFO = {"description": "SynthVQA in the VQA v2 layout", "version": "2.0", "year": 2026,
         "contributor": "stepprune", "date_created": "2026-01-01"}
_LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}


def question_type(q: dict[str, Any]) -> str:
    """VQA's question-type prefix ("how many", "what color is the", ...)."""
    if q["family"] == "counting":
        return "how many"
    return " ".join(q["question"].lower().split()[:4])


def export(ctx: ExportContext) -> int:
    """Write the VQAv2 layout under ``ctx.root / "vqav2"``; returns the number of questions."""
    out = ctx.root / NAME
    questions, annotations = [], []
    for q in ctx.of_families(*FAMILIES):
        scene = ctx.scenes[q["image_id"]]
        image_id = coco_image_id(scene)
        question_id = image_id * 1000 + question_index(q["qid"])
        name = coco_file_name(scene)
        ctx.write_image(q["image_id"], out / "val2014" / name)
        questions.append({"image_id": image_id, "question": q["question"], "question_id": question_id})
        annotations.append({
            "question_id": question_id,
            "image_id": image_id,
            "question_type": question_type(q),
            "answer_type": "number" if q["family"] == "counting" else "other",
            "multiple_choice_answer": q["answer"],
            "answers": [{"answer": q["answer"], "answer_confidence": "yes", "answer_id": k + 1}
                        for k in range(N_ANSWERS)],
        })
        ctx.record(NAME, question_id, q, image=f"val2014/{name}")
    write_json(out / "v2_OpenEnded_mscoco_val2014_questions.json", {
        "info": _INFO, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
        "license": _LICENSE, "questions": questions})
    write_json(out / "v2_mscoco_val2014_annotations.json", {
        "info": _INFO, "license": _LICENSE, "data_subtype": "val2014", "annotations": annotations})
    return len(questions)
