"""Benchmark-format exports: each layout parses as the real benchmark's files do, holds one item per native
question of the mirrored families with the same answer, and (once the real benchmark modules are merged) loads
with ``stepprune.benchmarks.<name>.load``."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

LETTERS = "ABCDE"
SPLITS = ("val", "test")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _native(out: Path, split: str, *families: str) -> list[dict]:
    return [q for q in _jsonl(out / "native" / split / "questions.jsonl") if q["family"] in families]


def _id_map(out: Path, split: str, benchmark: str) -> dict[str, dict]:
    rows = _jsonl(out / "benchmarks" / split / "id_map.jsonl")
    return {r["id"]: r for r in rows if r["benchmark"] == benchmark}


def _qids(out, split):
    return {q["qid"]: q for q in _jsonl(out / "native" / split / "questions.jsonl")}


@pytest.mark.parametrize("split", SPLITS)
def test_gqa_layout(generated, split):
    out, manifest = generated
    root = out / "benchmarks" / split / "gqa"
    data = json.loads((root / "testdev_balanced_questions.json").read_text())
    native = _native(out, split, "attribute", "relation")
    assert len(data) == len(native) == manifest["benchmarks"][split]["items"]["gqa"]
    for q in native:
        g = data[q["qid"]]
        assert (g["question"], g["answer"], g["imageId"], g["isBalanced"]) == (
            q["question"], q["answer"], q["image_id"], True)
        assert {"types", "groups", "semantic", "semanticStr", "fullAnswer"} <= set(g)
        assert (root / "images" / f"{g['imageId']}.jpg").is_file()


@pytest.mark.parametrize("split", SPLITS)
def test_pope_layout(generated, split):
    out, _ = generated
    root = out / "benchmarks" / split / "pope"
    native = _native(out, split, "existence")
    total = 0
    for cat in ("random", "popular", "adversarial"):
        lines = _jsonl(root / "coco" / f"coco_pope_{cat}.json")
        expect = [q for q in native if q["subfamily"] == cat]
        assert [(x["text"], x["label"]) for x in lines] == [(q["question"], q["answer"]) for q in expect]
        assert [x["question_id"] for x in lines] == list(range(1, len(lines) + 1))
        assert all((root / "val2014" / x["image"]).is_file() and x["image"].startswith("COCO_val2014_")
                   for x in lines)
        labels = Counter(x["label"] for x in lines)
        assert labels["yes"] == labels["no"], "POPE files are balanced"
        total += len(lines)
    assert total == len(native)


@pytest.mark.parametrize("split", SPLITS)
def test_mme_layout(generated, split):
    out, _ = generated
    root = out / "benchmarks" / split / "mme" / "MME_Benchmark_release_version"
    native = _native(out, split, "mme")
    lines = []
    for txt in sorted(root.glob("*/*.txt")):
        rows = txt.read_text().splitlines()
        assert len(rows) == 2 and txt.with_suffix(".jpg").is_file()
        assert [r.split("\t")[1] for r in rows] == ["Yes", "No"]
        assert all(r.split("\t")[0].endswith(" Please answer yes or no.") for r in rows)
        for r in rows:
            question, answer = r.split("\t")
            lines.append((txt.parent.name, question.removesuffix(" Please answer yes or no."), answer))
    expect = [(q["subfamily"], q["question"], q["answer"].capitalize()) for q in native]
    assert sorted(lines) == sorted(expect)
    assert {p.name for p in root.iterdir()} <= {"existence", "count", "position", "color", "OCR"}


@pytest.mark.parametrize("split", SPLITS)
def test_mmbench_layout_with_circular_copies(generated, split):
    out, _ = generated
    path = out / "benchmarks" / split / "mmbench_en" / "mmbench_dev_20230712.tsv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert list(rows[0]) == ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
                             "source", "l2-category", "comment", "split"]
    native = _native(out, split, "mc_mmbench")
    assert len(rows) == sum(len(q["choices"]) for q in native)
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(int(r["index"]) % 1_000_000, []).append(r)
    assert len(groups) == len(native)
    for base, q in enumerate(native):
        copies = sorted(groups[base], key=lambda r: int(r["index"]))
        correct = q["choices"][LETTERS.index(q["answer"])]
        assert copies[0]["answer"] == q["answer"] and [copies[0][L] for L in "ABCD"] == q["choices"]
        for k, r in enumerate(copies):
            assert int(r["index"]) == base + k * 1_000_000 and r["question"] == q["question"]
            assert r[r["answer"]] == correct, "the answer letter follows the rotated options"
        assert len({r["answer"] for r in copies}) == len(copies)
        im = Image.open(io.BytesIO(base64.b64decode(copies[0]["image"])))
        assert im.format == "JPEG" and im.size == (192, 192)


@pytest.mark.parametrize("split", SPLITS)
def test_scienceqa_layout(generated, split):
    out, _ = generated
    root = out / "benchmarks" / split / "scienceqa"
    problems = json.loads((root / "problems.json").read_text())
    splits = json.loads((root / "pid_splits.json").read_text())
    native = _native(out, split, "mc_science")
    assert splits[split] == list(problems) and len(problems) == len(native)
    assert set(splits) >= {"train", "val", "test", "trainval", "minitrain", "minival", "minitest"}
    for (pid, p), q in zip(problems.items(), native):
        assert (p["question"], p["choices"], LETTERS[p["answer"]], p["hint"]) == (
            q["question"], q["choices"], q["answer"], q["hint"])
        assert p["image"] == "image.png" and p["split"] == split
        png = root / "images" / split / pid / "image.png"
        assert png.read_bytes() == (out / "native" / split / q["image"]).read_bytes()


@pytest.mark.parametrize("split", SPLITS)
def test_vqav2_layout(generated, split):
    out, _ = generated
    root = out / "benchmarks" / split / "vqav2"
    qfile = json.loads((root / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    afile = json.loads((root / "v2_mscoco_val2014_annotations.json").read_text())
    assert {"info", "task_type", "data_type", "data_subtype", "license", "questions"} <= set(qfile)
    native = _native(out, split, "counting", "attribute")
    assert len(qfile["questions"]) == len(afile["annotations"]) == len(native)
    anns = {a["question_id"]: a for a in afile["annotations"]}
    for item, q in zip(qfile["questions"], native):
        a = anns[item["question_id"]]
        assert item["question"] == q["question"] and a["image_id"] == item["image_id"]
        assert a["multiple_choice_answer"] == q["answer"]
        assert [x["answer"] for x in a["answers"]] == [q["answer"]] * 10
        assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        assert a["answer_type"] == ("number" if q["family"] == "counting" else "other")
        assert (root / "val2014" / f"COCO_val2014_{item['image_id']:012d}.jpg").is_file()


@pytest.mark.parametrize("split", SPLITS)
def test_textvqa_layout(generated, split):
    out, _ = generated
    root = out / "benchmarks" / split / "textvqa"
    data = json.loads((root / "TextVQA_0.5.1_val.json").read_text())
    ocr_file = json.loads((root / "TextVQA_Rosetta_OCR_v0.2_val.json").read_text())
    ocr = {d["image_id"]: d for d in ocr_file["data"]}
    native = _native(out, split, "text")
    assert len(data["data"]) == len(native) and data["dataset_version"] == "0.5.1"
    for item, q in zip(data["data"], native):
        assert item["question"] == q["question"] and item["answers"] == [q["answer"]] * 10
        assert item["image_id"] == q["image_id"]
        assert (root / "train_images" / f"{q['image_id']}.jpg").is_file()
        # the loader's prompt, rebuilt from the OCR file, is the native prompt
        tokens = ocr[item["image_id"]]["ocr_tokens"]
        rebuilt = (f"{item['question']}\nReference OCR token: {', '.join(tokens)}"
                   "\nAnswer the question using a single word or phrase.")
        assert rebuilt == q["prompt"]


def test_exported_jpegs_are_close_to_the_native_pngs(generated):
    out, _ = generated
    for jpg in sorted((out / "benchmarks" / "val" / "gqa" / "images").glob("*.jpg"))[:5]:
        png = out / "native" / "val" / "images" / f"{jpg.stem}.png"
        a = np.asarray(Image.open(jpg).convert("RGB"), float)
        b = np.asarray(Image.open(png).convert("RGB"), float)
        # per-patch means (what a patch token summarises) survive JPEG; pixel noise on noisy backgrounds may not
        pa, pb = (x.reshape(24, 8, 24, 8, 3).mean(axis=(1, 3)) for x in (a, b))
        assert np.abs(pa - pb).max() < 8.0 and np.abs(pa - pb).mean() < 1.0


def test_id_map_covers_every_exported_item(generated):
    out, manifest = generated
    for split in SPLITS:
        rows = _jsonl(out / "benchmarks" / split / "id_map.jsonl")
        assert Counter(r["benchmark"] for r in rows) == Counter(manifest["benchmarks"][split]["items"])
        qids = _qids(out, split)
        assert all(r["qid"] in qids and qids[r["qid"]]["image_id"] == r["image_id"] for r in rows)


# ---- through the real loaders (skipped until stepprune.benchmarks.<name> is merged)
# ------------------------------
BENCH = {  # module -> (folder, native families)
    "gqa": ("gqa", ("attribute", "relation")),
    "pope": ("pope", ("existence",)),
    "mme": ("mme", ("mme",)),
    "mmbench": ("mmbench_en", ("mc_mmbench",)),
    "scienceqa": ("scienceqa", ("mc_science",)),
    "vqav2": ("vqav2", ("counting", "attribute")),
    "textvqa": ("textvqa", ("text",)),
}


def _load_all(mod, folder: Path, name: str, split: str) -> list:
    """The module's items for the whole folder. The other modules' split names are not known here, so this
    tries POPE's three categories (summed), then the default, then the plausible split names."""
    errors = []
    if name == "pope":
        try:
            return [i for cat in ("random", "popular", "adversarial") for i in mod.load(folder, split=cat)]
        except (FileNotFoundError, KeyError, ValueError) as e:
            errors.append(f"per category: {e!r}")
    for kw in ({}, *({"split": s} for s in (split, "val", "test", "dev", "testdev"))):
        try:
            items = mod.load(folder, **kw)
        except (FileNotFoundError, KeyError, ValueError) as e:
            errors.append(f"{kw}: {e!r}")
            continue
        if items:
            return items
    pytest.fail(f"stepprune.benchmarks.{name}.load read nothing from {folder}: {errors}")


def _canon(answer) -> str:
    if isinstance(answer, (list, tuple)):
        answer = Counter(a["answer"] if isinstance(a, dict) else a for a in answer).most_common(1)[0][0]
    if isinstance(answer, int) and not isinstance(answer, bool):
        answer = LETTERS[answer]
    return str(answer).strip().lower()


def _options(prompt: str) -> dict[str, str]:
    return {line[0]: line[3:] for line in prompt.split("\n") if len(line) > 3 and line[0] in LETTERS
            and line[1:3] == ". "}


@pytest.mark.parametrize("name", list(BENCH))
@pytest.mark.parametrize("split", SPLITS)
def test_real_loader_reads_the_export(generated, name, split):
    mod = pytest.importorskip(f"stepprune.benchmarks.{name}")
    out, manifest = generated
    folder_name, families = BENCH[name]
    folder = out / "benchmarks" / split / folder_name
    items = _load_all(mod, folder, name, split)
    assert len(items) == manifest["benchmarks"][split]["items"][name]

    rows = [r for r in _jsonl(out / "benchmarks" / split / "id_map.jsonl") if r["benchmark"] == name]
    by_file = {r["image"]: r["image_id"] for r in rows if r.get("image")}
    by_sha = {r["image_sha1"]: r["image_id"] for r in rows if r.get("image_sha1")}
    native = _native(out, split, *families)
    for it in items:
        if it.image_bytes is not None:
            image_id = by_sha[hashlib.sha1(it.image_bytes).hexdigest()]
        else:
            image_id = by_file[Path(it.image_path).resolve().relative_to(folder.resolve()).as_posix()]
        lines = [line.strip() for line in it.prompt.split("\n")]
        cands = [q for q in native if q["image_id"] == image_id
                 and any(line == q["question"] or line.startswith(q["question"] + " ") for line in lines)]
        assert len(cands) == 1, f"{name} item {it.qid}: {len(cands)} native questions match its prompt"
        q = cands[0]
        if q["choices"]:  # compare option texts: circular copies rotate the letters
            opts = _options(it.prompt)
            assert opts[_canon(it.answer).upper()] == q["choices"][LETTERS.index(q["answer"])]
        else:
            assert _canon(it.answer) == q["answer"].lower()
