"""Ray Data: packing the instruction corpus into Parquet shards, bad-record tolerance, streaming tokenisation."""

import pyarrow.parquet as pq
import pytest

from pipeline.data import (SHARD_SCHEMA, DataError, check_record, prepare_shards, rows_to_batch, single_turn_records,
                           training_dataset)
from tests.pipeline.corpus import write_corpus

pytestmark = pytest.mark.ray


def test_check_record_names_the_field():
    assert check_record({"id": 1, "image": "a.png", "conversations": []}).startswith("field 'conversations'")
    assert check_record([1]) == "field '<record>': expected an object, got list"


def test_single_turn_records_split_a_conversation_into_its_question_answer_pairs():
    record = {"id": "r", "image": "a.png", "source": "x", "conversations": [
        {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"},
        {"from": "human", "value": "How many?"}, {"from": "gpt", "value": "2"},
        {"from": "human", "value": "Left of the circle?"}, {"from": "gpt", "value": "no"}]}
    pieces = single_turn_records(record)
    assert [p["id"] for p in pieces] == ["r_t0", "r_t1", "r_t2"]
    assert [p["conversations"] for p in pieces] == [
        [{"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}],
        [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "2"}],
        [{"from": "human", "value": "<image>\nLeft of the circle?"}, {"from": "gpt", "value": "no"}]]
    assert all(p["image"] == "a.png" and p["source"] == "x" and not check_record(p) for p in pieces)
    single = {"id": "s", "image": "a.png", "conversations": record["conversations"][:2]}
    assert single_turn_records(single) == [single]  # already one pair: unchanged (and its id too)
    broken = {"id": "b", "image": "a.png", "conversations": [record["conversations"][i] for i in (0, 2, 1, 3)]}
    assert single_turn_records(broken) == [broken]  # malformed: whole, for the packer to report


def test_split_turns_packs_one_row_per_pair_and_names_bad_rows_by_corpus_row(ray_session, tmp_path):
    corpus, folder, problems = write_corpus(tmp_path / "c")
    manifest = prepare_shards(corpus, folder, tmp_path / "shards", max_bad_records=4, rows_per_shard=5,
                              split_turns=True, shuffle_seed=3)
    assert manifest["records"] == 8 * 2 + 4 and manifest["written"] == 16
    assert {b["row"] for b in manifest["bad"]} == problems.keys()
    table = pq.read_table(sorted((tmp_path / "shards").glob("*.parquet")))
    assert sorted(table.column("id").to_pylist()) == sorted(f"good-{i}_t{j}" for i in range(8) for j in range(2))
    rows = dict(zip(table.column("id").to_pylist(), table.column("row").to_pylist()))
    assert rows["good-5_t0"] == rows["good-5_t1"] == 5


def test_bad_records_are_counted_and_skipped_within_tolerance(ray_session, tmp_path):
    corpus, folder, problems = write_corpus(tmp_path / "c")
    manifest = prepare_shards(corpus, folder, tmp_path / "shards", max_bad_records=4, rows_per_shard=3)
    assert manifest["records"] == 12 and manifest["written"] == 8
    assert {b["row"]: b["error"] for b in manifest["bad"]}.keys() == problems.keys()
    for b in manifest["bad"]:
        assert problems[b["row"]] in b["error"]
    files = sorted((tmp_path / "shards").glob("*.parquet"))
    assert len(files) >= 2
    table = pq.read_table(files)
    assert table.schema.equals(SHARD_SCHEMA, check_metadata=False)
    assert sorted(table.column("id").to_pylist()) == sorted(f"good-{i}" for i in range(8))


def test_exceeding_the_tolerance_fails_with_every_bad_row_named(ray_session, tmp_path):
    corpus, folder, problems = write_corpus(tmp_path / "c")
    with pytest.raises(DataError) as err:
        prepare_shards(corpus, folder, tmp_path / "shards", max_bad_records=3)
    msg = str(err.value)
    assert "4 bad records exceed data.max_bad_records=3" in msg
    for row in problems:
        assert f"{corpus}: row {row}" in msg


def test_training_dataset_streams_tokenised_rows(ray_session, tmp_path, tiny_llava_dir, llava):
    corpus, folder, _ = write_corpus(tmp_path / "c")
    prepare_shards(corpus, folder, tmp_path / "shards", max_bad_records=4)
    ds = training_dataset(tmp_path / "shards", str(tiny_llava_dir), batch_size=4)
    batches = list(ds.iter_batches(batch_size=3, batch_format="numpy", drop_last=False))
    assert sum(len(b["id"]) for b in batches) == 8
    packed = rows_to_batch(batches[0], llava.pad_token_id)
    prompt = llava.finish(packed["encoded"], packed["ids"])
    assert prompt.batch_size == len(packed["ids"])
    lab = prompt.labels[prompt.labels != -100]
    assert (lab == llava.tokenizer.eos_token_id).sum() == 2 * prompt.batch_size  # two answers per conversation
    assert prompt.question_mask.sum(1).min() > 0


def test_shards_keep_the_corpus_order_across_many_blocks(ray_session, tmp_path):
    # Enough records for several Ray Data blocks (one per 200); the first block's images are large, so its tasks
    # finish last. Rows once came out in task-completion order (and, with Ray's preserve_order, still did now and
    # then), so two preparations of one corpus could differ, which made identical training runs diverge.
    import json

    from tests.conftest import make_images

    folder = tmp_path / "c"
    (folder / "images").mkdir(parents=True)
    make_images(1, seed=3, size=(640, 640))[0].save(folder / "images" / "big.png")
    make_images(1, seed=4, size=(8, 8))[0].save(folder / "images" / "small.png")
    records = [{"id": f"r{i:04d}", "image": "images/big.png" if i < 200 else "images/small.png",
                "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": str(i)}]}
               for i in range(800)]
    (folder / "corpus.json").write_text(json.dumps(records))
    prepare_shards(folder / "corpus.json", folder, tmp_path / "shards", rows_per_shard=300)
    files = sorted((tmp_path / "shards").glob("*.parquet"))
    assert len(files) >= 3
    ids = [pq.read_table(f, columns=["id"])["id"].to_pylist() for f in files]
    assert [i for part in ids for i in part] == [r["id"] for r in records]
    # Each file is named for the position of its first row.
    assert [int(f.stem.removeprefix("part-")) for f in files] == [int(part[0][1:]) for part in ids]
    # With a seed: that seed's permutation of the corpus, the same on every preparation.
    import numpy as np

    prepare_shards(folder / "corpus.json", folder, tmp_path / "shuffled", rows_per_shard=300, shuffle_seed=7)
    got = [i for f in sorted((tmp_path / "shuffled").glob("*.parquet"))
           for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    assert got == [records[i]["id"] for i in np.random.default_rng(7).permutation(800)]


def test_the_training_job_repacks_shards_written_before_their_order_was_deterministic(ray_session, tmp_path):
    import json

    from pipeline.config import TrainJobConfig
    from pipeline.config_loader import load
    from pipeline.train_job import ensure_data
    from tests.pipeline.train_fixtures import train_overrides

    cfg = load(TrainJobConfig, None, train_overrides(tmp_path, tmp_path / "unused-backbone"))
    first = ensure_data(cfg)
    assert first["shuffle_seed"] == cfg.data.shuffle_seed and first["stamp"]["order"] == "shuffled:0/by-position"
    manifest = tmp_path / "shards" / "_manifest.json"
    assert ensure_data(cfg) == first  # up to date: not packed again
    old = json.loads(manifest.read_text())
    del old["stamp"]["order"]  # as written by the earlier code
    manifest.write_text(json.dumps(old))
    assert json.loads(manifest.read_text())["stamp"] != first["stamp"]
    assert ensure_data(cfg)["stamp"] == first["stamp"]  # re-packed


def test_a_batch_of_scattered_positions_is_written_as_one_file_per_run(tmp_path):
    # Should Ray ever hand one task rows from non-adjacent blocks, each run of consecutive positions gets its own
    # file, so the files in name order still hold the rows in position order; a bad row does not split a run.
    import numpy as np

    from pipeline.data import _write_runs

    pos = [7, 5, 6, 0, 1, 9]
    batch = {"pos": np.array(pos), "id": np.array([f"p{p}" for p in pos], dtype=object),
             "row": np.array(pos), "image": np.array([b"x"] * 6, dtype=object),
             "conversations": np.array(["[]"] * 6, dtype=object),
             "error": np.array(["", "", "bad", "", "", ""], dtype=object)}
    out = _write_runs(batch, str(tmp_path))
    assert out["first"].tolist() == [0, 5, 9] and out["rows"].tolist() == [2, 2, 1]
    files = sorted(tmp_path.glob("*.parquet"))
    assert [f.name for f in files] == ["part-000000000000.parquet", "part-000000000005.parquet",
                                       "part-000000000009.parquet"]
    assert [pq.read_table(f)["id"].to_pylist() for f in files] == [["p0", "p1"], ["p5", "p7"], ["p9"]]
