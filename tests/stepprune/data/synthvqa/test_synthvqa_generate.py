"""generate_synthvqa: manifest, split disjointness, reproducibility, the LLaVA-Instruct export and the native
format read back through stepprune.benchmarks.synthvqa."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import pytest

from stepprune.benchmarks import RecordError
from stepprune.benchmarks import synthvqa as bench
from stepprune.data.synthvqa import SPLITS, SynthVQAConfig, generate_split, generate_synthvqa


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_manifest_counts_match_the_files(generated):
    out, manifest = generated
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == 7 and manifest["generator_version"]
    for split in SPLITS:
        entry = manifest["splits"][split]
        qs = _rows(out / "native" / split / "questions.jsonl")
        scenes = _rows(out / "native" / split / "scenes.jsonl")
        assert entry["images"] == len(scenes) == len(list((out / "native" / split / "images").glob("*.png")))
        assert entry["questions"] == len(qs)
        assert entry["families"] == dict(Counter(q["family"] for q in qs))
    assert set(manifest["llava_instruct"]) == {"train", "val"}
    assert set(manifest["benchmarks"]) == {"val", "test"}


def test_splits_are_disjoint(generated):
    out, _ = generated
    ids, hashes = {}, {}
    for split in SPLITS:
        images = sorted((out / "native" / split / "images").glob("*.png"))
        ids[split] = {p.stem for p in images}
        hashes[split] = {hashlib.sha1(p.read_bytes()).hexdigest() for p in images}
        assert all(i.startswith(f"{split}_") for i in ids[split])
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not ids[a] & ids[b] and not hashes[a] & hashes[b]


def test_regeneration_is_byte_identical_and_workers_do_not_matter(tmp_path):
    small = dict(seed=3, n_train_images=4, n_val_images=3, n_test_images=3, questions_per_image=6)
    m1 = generate_synthvqa(tmp_path / "a", **small)
    m2 = generate_synthvqa(tmp_path / "b", **small)
    assert m1 == m2
    for rel in ("native/val/questions.jsonl", "native/test/scenes.jsonl",
                "llava_instruct/synthvqa_train.json", "benchmarks/test/mmbench_en/mmbench_dev_20230712.tsv",
                "native/train/images/train_000002.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    cfg = SynthVQAConfig(**small)
    generate_split(cfg, "train", tmp_path / "w1")
    generate_split(dataclasses.replace(cfg, num_workers=2), "train", tmp_path / "w2")
    for rel in ("questions.jsonl", "scenes.jsonl", "images/train_000003.png"):
        assert (tmp_path / "w1" / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes(), rel
    m3 = generate_synthvqa(tmp_path / "c", **{**small, "seed": 4})
    assert (tmp_path / "c/native/val/questions.jsonl").read_bytes() != (
        tmp_path / "a/native/val/questions.jsonl").read_bytes()
    assert m3["seed"] == 4


def test_refuses_to_overwrite_unless_asked(tmp_path):
    small = dict(n_train_images=1, n_val_images=1, n_test_images=1, questions_per_image=2)
    (tmp_path / "keep.txt").write_text("mine")
    generate_synthvqa(tmp_path, **small)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthvqa(tmp_path, **small)
    generate_synthvqa(tmp_path, overwrite=True, **small)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_llava_instruct_export(generated):
    out, manifest = generated
    for split in ("train", "val"):
        records = json.loads((out / "llava_instruct" / f"synthvqa_{split}.json").read_text())
        assert len(records) == manifest["llava_instruct"][split]["conversations"]
        native = _rows(out / "native" / split / "questions.jsonl")
        by_prompt = Counter((q["image_id"], q["prompt"], q["answer"]) for q in native)
        seen = Counter()
        pair_conv = {}
        ids = [r["id"] for r in records]
        assert len(set(ids)) == len(ids)
        for r in records:
            assert set(r) == {"id", "image", "conversations"}
            assert (out / "llava_instruct" / "images" / r["image"]).is_file()
            turns = r["conversations"]
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and turns
            assert turns[0]["value"].startswith("<image>\n")
            assert all("<image>" not in t["value"] for t in turns[1:])
            image_id = r["image"].removesuffix(".png")
            for h, g in zip(turns[::2], turns[1::2]):
                prompt = h["value"].removeprefix("<image>\n")
                seen[(image_id, prompt, g["value"])] += 1
        assert seen == by_prompt, "every native question is one turn, with its prompt and answer"
        # the two questions of a pair never share a conversation
        conv_of = {}
        for r in records:
            for h in r["conversations"][::2]:
                conv_of[(r["image"].removesuffix(".png"), h["value"].removeprefix("<image>\n"))] = r["id"]
        for q in native:
            if q["pair_id"]:
                pair_conv.setdefault(q["pair_id"], set()).add(conv_of[(q["image_id"], q["prompt"])])
        assert pair_conv and all(len(c) == 2 for c in pair_conv.values())


def test_native_round_trips_through_the_benchmark_loader(generated):
    out, _ = generated
    for split in ("val", "test"):
        rows = _rows(out / "native" / split / "questions.jsonl")
        for folder, kw in ((out / "native" / split, {}), (out / "native", {"split": split}),
                           (out, {"split": split})):
            items = bench.load(folder, **kw)
            assert [i.qid for i in items] == [r["qid"] for r in rows]
        for it, r in zip(items, rows):
            assert it.prompt == r["prompt"] and it.answer == r["answer"]
            assert it.meta["family"] == r["family"] and it.meta["evidence"] == r["evidence"]
            assert it.meta["n_objects"] == r["scene_stats"]["n_objects"]
            assert it.image_path.is_file() and it.load_image().size == (192, 192)
        result = bench.aggregate(items, [i.answer for i in items])
        assert result["overall"] == 1.0
        assert result["n/overall"] == sum(r["family"] != "describe" for r in rows)
        assert bench.aggregate(items, [None] * len(items))["overall"] == 0.0
    assert len(bench.load(out / "native" / "val", limit=5)) == 5


def test_loader_names_file_row_and_field(tmp_path, generated):
    out, _ = generated
    rows = (out / "native" / "val" / "questions.jsonl").read_text().splitlines()
    broken = json.loads(rows[2])
    broken["evidence"] = [0, 999]
    split = tmp_path / "val"
    (split / "images").mkdir(parents=True)
    for name in (out / "native" / "val" / "images").iterdir():
        (split / "images" / name.name).write_bytes(name.read_bytes())
    (split / "questions.jsonl").write_text("\n".join(rows[:2] + [json.dumps(broken)]) + "\n")
    with pytest.raises(RecordError) as e:
        bench.load(split)
    assert e.value.row == 3 and e.value.field == "evidence" and str(split / "questions.jsonl") in str(e.value)
    with pytest.raises(FileNotFoundError):
        bench.load(tmp_path / "nowhere")
