"""Tiny, synthetic copies of every benchmark's official on-disk layout, for tests and smoke runs.

Each ``write_<benchmark>(folder, ...)`` creates ``folder`` in exactly the layout that benchmark's ``load``
reads (and that the SynthVQA exporter writes), with a handful of records and images drawn by PIL (simple
coloured shapes; nothing is copied from a real dataset). The default records are returned by
``<benchmark>_records()`` so a test can alter them (e.g. to make one malformed) and pass them back in.
:func:`write_all` writes every benchmark under one root::

    folders = write_all(tmp_path)      # {"gqa": tmp_path / "gqa", "mmbench_en": ..., "textvqa": ...}
    items = get_benchmark("pope").load(folders["pope"])
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from stepprune.benchmarks.mmbench import FILES as MMBENCH_FILES
from stepprune.benchmarks.mme import COGNITION, PERCEPTION, RELEASE_DIR
from stepprune.benchmarks.pope import CATEGORIES as POPE_CATEGORIES

_PALETTE = ((220, 40, 40), (40, 160, 60), (40, 70, 220), (240, 200, 30), (150, 60, 180), (30, 190, 200))


def draw_image(seed: int, size: int = 32) -> Image.Image:
    """A small RGB picture: a background, a square and a circle whose colours and places depend on ``seed``."""
    image = Image.new("RGB", (size, size), _PALETTE[seed % len(_PALETTE)])
    draw = ImageDraw.Draw(image)
    s = size // 4
    x = (seed * 7) % (size - 2 * s)
    draw.rectangle((x, s, x + s, 2 * s), fill=_PALETTE[(seed + 1) % len(_PALETTE)])
    draw.ellipse((size - 2 * s, size - 2 * s, size - s, size - s), fill=_PALETTE[(seed + 2) % len(_PALETTE)])
    return image


def save_image(path: Path, seed: int) -> Path:
    """Draws :func:`draw_image` into ``path`` (format from the suffix), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_image(seed).save(path)
    return path


def image_base64(seed: int) -> str:
    """A drawn PNG as base64 text (MMBench's ``image`` column)."""
    buffer = io.BytesIO()
    draw_image(seed).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- GQA


def gqa_records() -> dict[str, dict[str, Any]]:
    """Four questions on three images (one .png); the last is not balanced."""
    def q(question, answer, image, structural, balanced=True):
        return {"question": question, "answer": answer, "fullAnswer": f"The answer is {answer}.",
                "imageId": image, "isBalanced": balanced,
                "types": {"structural": structural, "semantic": "attr", "detailed": f"{structural}Attr"},
                "groups": {"global": None, "local": "10c-square"}, "semantic": [],
                "semanticStr": "select: square ->verify color: red", "entailed": [], "equivalent": []}
    return {"201307251": q("Is the square red?", "yes", "n1", "verify"),
            "201307252": q("What color is the circle?", "blue", "n1", "query"),
            "201307253": q("Which side is the square on?", "left", "n3", "query"),
            "201307254": q("Is there a circle?", "no", "n2", "verify", balanced=False)}


def write_gqa(folder: Path, records: dict[str, dict[str, Any]] | None = None) -> Path:
    """``gqa/testdev_balanced_questions.json`` + ``images/<imageId>.jpg`` (``n3`` as .png)."""
    records = gqa_records() if records is None else records
    _write_json(folder / "testdev_balanced_questions.json", records)
    for seed, image_id in enumerate(sorted({r["imageId"] for r in records.values() if "imageId" in r})):
        save_image(folder / "images" / f"{image_id}{'.png' if image_id == 'n3' else '.jpg'}", seed)
    return folder


# ------------------------------------------------------------------------------------------------ MMBench

MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split")
_MMBENCH_TEXT = {
    "en": {"q0": "What animal is shown?", "o0": ["cat", "dog", "bird", "fish"], "q1": "Is it day or night?",
           "h1": "The picture was taken at noon.", "o1": ["day", "night"]},
    "cn": {"q0": "图中是什么动物？", "o0": ["猫", "狗", "鸟", "鱼"], "q1": "现在是白天还是夜晚？",
           "h1": "照片拍摄于中午。", "o1": ["白天", "夜晚"]},
}


def _rotations(base: dict[str, str], n_options: int) -> list[dict[str, str]]:
    """CircularEval copies: options rotated by k, the answer letter following its option."""
    letters = "ABCD"[:n_options]
    options = [base[c] for c in letters]
    answer_text = base[base["answer"]]
    copies = []
    for k in range(1, n_options):
        rotated = options[k:] + options[:k]
        row = {**base, "index": str(int(base["index"]) + k * 1_000_000),
               "answer": letters[rotated.index(answer_text)]}
        row.update(dict(zip(letters, rotated)))
        copies.append(row)
    return copies


def mmbench_records(lang: str = "en") -> list[dict[str, str]]:
    """Two base questions with their circular copies (4 + 2 rows): question 0 has four options and no hint
    (``nan``); question 1 has a hint and two options (C is ``nan``, D is empty)."""
    t = _MMBENCH_TEXT[lang]
    common = {"category": "attribute_recognition", "source": "synth", "l2-category": "finegrained_perception",
              "comment": "nan", "split": "dev"}
    base0 = {"index": "0", "question": t["q0"], "hint": "nan", **dict(zip("ABCD", t["o0"])), "answer": "B",
             "image": image_base64(0), **common}
    base1 = {"index": "1", "question": t["q1"], "hint": t["h1"], "A": t["o1"][0], "B": t["o1"][1], "C": "nan",
             "D": "", "answer": "A", "image": image_base64(1), **common, "category": "scene"}
    return [base0, base1] + _rotations(base0, 4) + _rotations(base1, 2)


def write_mmbench(folder: Path, lang: str = "en", rows: list[dict[str, str]] | None = None,
                  file_name: str | None = None) -> Path:
    """``mmbench_en/mmbench_dev_20230712.tsv`` (or the CN file), tab-separated with a header row."""
    rows = mmbench_records(lang) if rows is None else rows
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / (file_name or MMBENCH_FILES[lang])).open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MMBENCH_COLUMNS, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return folder


# ---------------------------------------------------------------------------------------------------- MME

MME_NESTED = ("artwork", "celebrity", "landmark", "posters", "scene")  # images/ + questions_answers_YN/


def mme_records(images_per_subtask: int = 1) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """subtask -> image file name -> its two (question line, Yes|No) pairs. ``count``'s second question uses
    the double-space variant of the instruction that a few real GT files have."""
    out: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for subtask in PERCEPTION + COGNITION:
        suffix = ".png" if subtask in COGNITION or subtask == "OCR" else ".jpg"
        out[subtask] = {}
        for i in range(images_per_subtask):
            gap = "  " if subtask == "count" else " "
            out[subtask][f"{i + 1:04d}{suffix}"] = [
                (f"Is there a square in this {subtask} image? Please answer yes or no.", "Yes"),
                (f"Is there a triangle in this {subtask} image?{gap}Please answer yes or no.", "No"),
            ]
    return out


def write_mme(folder: Path, records: dict[str, dict[str, list[tuple[str, str]]]] | None = None,
              wrapped: bool = True) -> Path:
    """``mme/MME_Benchmark_release_version/<subtask>/`` (``wrapped=False``: the subtasks directly in
    ``folder``); the subtasks in :data:`MME_NESTED` use ``images/`` + ``questions_answers_YN/``."""
    records = mme_records() if records is None else records
    root = folder / RELEASE_DIR if wrapped else folder
    seed = 0
    for subtask, images in records.items():
        nested = subtask in MME_NESTED
        for image_name, lines in images.items():
            stem = Path(image_name).stem
            save_image(root / subtask / ("images" if nested else "") / image_name, seed)
            txt = root / subtask / ("questions_answers_YN" if nested else "") / f"{stem}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text("".join(f"{q}\t{a}\n" for q, a in lines), encoding="utf-8")
            seed += 1
    return folder


# --------------------------------------------------------------------------------------------------- POPE


def pope_records(category: str) -> list[dict[str, Any]]:
    """Four questions on two images, labels yes/no/yes/no (POPE's current format, with ``image_id``)."""
    objects = {"random": ("square", "dog"), "popular": ("circle", "person"), "adversarial": ("square", "table")}
    present, absent = objects[category]
    rows = []
    for i in range(4):
        image_id = 1 + i // 2
        obj, label = (present, "yes") if i % 2 == 0 else (absent, "no")
        rows.append({"question_id": i + 1, "image": f"COCO_val2014_{image_id:012d}.jpg",
                     "text": f"Is there a {obj} in the image?", "label": label, "image_id": image_id})
    return rows


def write_pope(folder: Path, records: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """``pope/coco/coco_pope_{random,popular,adversarial}.json`` (JSON Lines) + ``val2014/`` images."""
    records = {c: pope_records(c) for c in POPE_CATEGORIES} if records is None else records
    (folder / "coco").mkdir(parents=True, exist_ok=True)
    images = set()
    for category, rows in records.items():
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (folder / "coco" / f"coco_pope_{category}.json").write_text(text, encoding="utf-8")
        images.update(r["image"] for r in rows if isinstance(r, dict) and "image" in r)
    for seed, name in enumerate(sorted(images)):
        save_image(folder / "val2014" / name, seed)
    return folder


# ----------------------------------------------------------------------------------------------- ScienceQA


def scienceqa_records() -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """(problems, pid_splits): test problems 1 and 2 have images (2 and 4 choices; 2 has a hint), test
    problem 3 has none, problem 4 is in train."""
    def p(question, choices, answer, hint, image, split):
        return {"question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
                "task": "closed choice", "grade": "grade3", "subject": "natural science", "topic": "colors",
                "category": "Shapes", "skill": "Identify shapes", "lecture": "", "solution": "", "split": split}
    problems = {"1": p("Which shape is on the left?", ["square", "circle"], 0, "", "image.png", "test"),
                "2": p("Which color is the circle?", ["red", "green", "blue", "yellow"], 2,
                       "Look at the picture.", "image.png", "test"),
                "3": p("What is two plus two?", ["3", "4"], 1, "", None, "test"),
                "4": p("Which shape is bigger?", ["square", "circle"], 1, "", "image.png", "train")}
    splits = {"train": ["4"], "val": [], "test": ["1", "2", "3"], "trainval": ["4"], "minitrain": ["4"],
              "minival": [], "minitest": ["1"]}
    return problems, splits


def write_scienceqa(folder: Path, problems: dict[str, dict[str, Any]] | None = None,
                    splits: dict[str, list[str]] | None = None) -> Path:
    """``scienceqa/problems.json``, ``pid_splits.json`` and ``images/<split>/<pid>/image.png``."""
    default_problems, default_splits = scienceqa_records()
    problems = default_problems if problems is None else problems
    splits = default_splits if splits is None else splits
    _write_json(folder / "problems.json", problems)
    _write_json(folder / "pid_splits.json", splits)
    for seed, (pid, problem) in enumerate(sorted(problems.items())):
        if isinstance(problem, dict) and problem.get("image"):
            save_image(folder / "images" / problem.get("split", "test") / pid / problem["image"], seed)
    return folder


# -------------------------------------------------------------------------------------------------- VQAv2


def vqav2_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(questions, annotations): three questions on two images, 10 answer records each."""
    def answers(*groups):
        texts = [text for text, n in groups for _ in range(n)]
        return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(texts)]
    questions = [{"image_id": 1, "question": "What color is the square?", "question_id": 1000},
                 {"image_id": 1, "question": "How many circles are there?", "question_id": 1001},
                 {"image_id": 2, "question": "Is this a t-shirt?", "question_id": 2000}]
    annotations = [
        {"question_id": 1000, "image_id": 1, "question_type": "what color is the", "answer_type": "other",
         "multiple_choice_answer": "red", "answers": answers(("red", 6), ("dark red", 3), ("orange", 1))},
        {"question_id": 1001, "image_id": 1, "question_type": "how many", "answer_type": "number",
         "multiple_choice_answer": "1", "answers": answers(("1", 5), ("one", 3), ("2", 2))},
        {"question_id": 2000, "image_id": 2, "question_type": "is this a", "answer_type": "yes/no",
         "multiple_choice_answer": "yes", "answers": answers(("yes", 10))},
    ]
    return questions, annotations


def write_vqav2(folder: Path, questions: list[dict[str, Any]] | None = None,
                annotations: list[dict[str, Any]] | None = None) -> Path:
    """``vqav2/v2_OpenEnded_mscoco_val2014_questions.json``, ``v2_mscoco_val2014_annotations.json`` and
    ``val2014/COCO_val2014_<12-digit id>.jpg``."""
    default_q, default_a = vqav2_records()
    questions = default_q if questions is None else questions
    annotations = default_a if annotations is None else annotations
    info = {"info": {"description": "synthetic fixture"}, "license": {}, "data_subtype": "val2014"}
    _write_json(folder / "v2_OpenEnded_mscoco_val2014_questions.json",
                {**info, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions})
    _write_json(folder / "v2_mscoco_val2014_annotations.json", {**info, "annotations": annotations})
    for seed, image_id in enumerate(sorted({q["image_id"] for q in questions if isinstance(q, dict)})):
        save_image(folder / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", seed)
    return folder


# ------------------------------------------------------------------------------------------------ TextVQA

TEXTVQA_IMAGES = ("0a1b2c3d4e5f6789", "f0e1d2c3b4a59687")


def textvqa_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(questions, OCR entries). Question 3 repeats question 1 on the same image with other answers (LLaVA's
    ``(image_id, question.lower())`` lookup quirk); the second image has no OCR tokens."""
    a, b = TEXTVQA_IMAGES

    def q(qid, question, image, answers):
        return {"question_id": qid, "question": question, "image_id": image, "answers": answers,
                "image_classes": ["Sign"], "flickr_original_url": "", "flickr_300k_url": "",
                "image_width": 32, "image_height": 32, "question_tokens": question.rstrip("?").split(),
                "set_name": "val"}
    questions = [q(34602, "what brand is this?", a, ["coca cola"] * 7 + ["coke"] * 3),
                 q(34603, "how much does it cost?", a, ["$5"] * 6 + ["5"] * 4),
                 q(34604, "what is written on the sign?", b, ["stop"] * 10),
                 q(34605, "What brand is this?", a, ["pepsi"] * 10)]
    ocr = [{"image_id": a, "ocr_tokens": ["coca", "cola", "$5"], "ocr_info": []},
           {"image_id": b, "ocr_tokens": [], "ocr_info": []}]
    return questions, ocr


def write_textvqa(folder: Path, questions: list[dict[str, Any]] | None = None,
                  ocr: list[dict[str, Any]] | None = None) -> Path:
    """``textvqa/TextVQA_0.5.1_val.json``, ``TextVQA_Rosetta_OCR_v0.2_val.json`` and
    ``train_images/<image_id>.jpg``."""
    default_q, default_ocr = textvqa_records()
    questions = default_q if questions is None else questions
    ocr = default_ocr if ocr is None else ocr
    _write_json(folder / "TextVQA_0.5.1_val.json",
                {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": questions})
    _write_json(folder / "TextVQA_Rosetta_OCR_v0.2_val.json", {"dataset_type": "val", "data": ocr})
    for seed, image_id in enumerate(sorted({q["image_id"] for q in questions if isinstance(q, dict)})):
        save_image(folder / "train_images" / f"{image_id}.jpg", seed)
    return folder


# ------------------------------------------------------------------------------------------------------ all


def write_all(root: Path) -> dict[str, Path]:
    """Writes every benchmark's default fixture under ``root``; returns ``{benchmark name: folder}``."""
    root = Path(root)
    return {
        "gqa": write_gqa(root / "gqa"),
        "mmbench_en": write_mmbench(root / "mmbench_en", "en"),
        "mmbench_cn": write_mmbench(root / "mmbench_cn", "cn"),
        "mme": write_mme(root / "mme"),
        "pope": write_pope(root / "pope"),
        "scienceqa": write_scienceqa(root / "scienceqa"),
        "vqav2": write_vqav2(root / "vqav2"),
        "textvqa": write_textvqa(root / "textvqa"),
    }

