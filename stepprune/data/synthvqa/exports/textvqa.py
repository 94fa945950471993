"""TextVQA v0.5.1 val layout (``text`` questions) with Rosetta-style OCR::

    textvqa/TextVQA_0.5.1_val.json              {dataset_type, dataset_name, dataset_version,
                                                  data: [{question_id, question, image_id, answers (10),
                                                  image_width, image_height, set_name, image_classes,
                                                  flickr_original_url, flickr_300k_url, question_tokens}]}
    textvqa/TextVQA_Rosetta_OCR_v0.2_val.json   {dataset_type, dataset_name, dataset_version,
                                                  data: [{image_id, ocr_tokens,
                                                  ocr_info: [{word, bounding_box (normalised)}]}]}
    textvqa/train_images/<image_id>.jpg

image_id = the native image id; question_id counts from 1. ``ocr_tokens`` keep the native (shuffled) order, so
"Reference OCR token: " + ", ".join(ocr_tokens) rebuilds the native prompt.
"""

from __future__ import annotations

from typing import Any

from stepprune.data.synthvqa.exports.common import ExportContext
from stepprune.data.synthvqa.files import write_json
from stepprune.data.synthvqa.vocab import IMAGE_SIZE

NAME = "textvqa"
N_ANSWERS = 10


def _ocr_info(scene: dict[str, Any]) -> list[dict[str, Any]]:
    by_word = {t["word"]: t for t in scene["texts"]}
    info = []
    for word in scene["ocr_tokens"]:
        x0, y0, x1, y1 = by_word[word]["bbox"]
        info.append({"word": word, "bounding_box": {
            "top_left_x": x0 / IMAGE_SIZE, "top_left_y": y0 / IMAGE_SIZE,
            "width": (x1 - x0 + 1) / IMAGE_SIZE, "height": (y1 - y0 + 1) / IMAGE_SIZE,
            "rotation": 0, "roll": 0, "pitch": 0, "yaw": 0}})
    return info


def export(ctx: ExportContext) -> int:
    """Write the TextVQA layout under ``ctx.root / "textvqa"``; returns the number of questions."""
    out = ctx.root / NAME
    data, ocr = [], {}
    for i, q in enumerate(ctx.of_families("text"), start=1):
        image = f"train_images/{q['image_id']}.jpg"
        ctx.write_image(q["image_id"], out / image)
        data.append({
            "question_id": i,
            "question": q["question"],
            "image_id": q["image_id"],
            "answers": [q["answer"]] * N_ANSWERS,
            "image_width": IMAGE_SIZE,
            "image_height": IMAGE_SIZE,
            "set_name": "val",
            "image_classes": [],
            "flickr_original_url": "",
            "flickr_300k_url": "",
            "question_tokens": q["question"].lower().rstrip("?").split(),
        })
        if q["image_id"] not in ocr:
            scene = ctx.scenes[q["image_id"]]
            ocr[q["image_id"]] = {"image_id": q["image_id"], "ocr_tokens": list(scene["ocr_tokens"]),
                                  "ocr_info": _ocr_info(scene), "set_name": "val"}
        ctx.record(NAME, i, q, image=image)
    write_json(out / "TextVQA_0.5.1_val.json",
               {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data})
    write_json(out / "TextVQA_Rosetta_OCR_v0.2_val.json",
               {"dataset_type": "val", "dataset_name": "rosetta_ocr", "dataset_version": "0.2",
                "data": list(ocr.values())})
    return len(data)
