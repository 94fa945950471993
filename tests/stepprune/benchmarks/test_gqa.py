"""GQA reader and scorer: LLaVA's eval.py rules vs lmms-eval's exact match."""

import pytest

from stepprune.benchmarks import RecordError, gqa
from stepprune.benchmarks.base import BenchmarkItem
from stepprune.benchmarks.fixtures import gqa_records, write_gqa


def test_load_reads_every_question_with_llava_prompt(folders):
    items = gqa.load(folders["gqa"])
    assert [it.qid for it in items] == ["201307251", "201307252", "201307253", "201307254"]
    assert items[0].prompt == "Is the square red?\nAnswer the question using a single word or phrase."
    assert items[0].answer == "yes"
    assert items[0].image_path.name == "n1.jpg"
    assert items[2].image_path.name == "n3.png"  # .png accepted
    assert [it.meta["is_balanced"] for it in items] == [True, True, True, False]
    assert len(gqa.load(folders["gqa"], limit=2)) == 2
    assert items[1].load_image().mode == "RGB"


def _item(answer: str) -> BenchmarkItem:
    return BenchmarkItem(qid="q", prompt="", answer=answer, meta={"is_balanced": True, "structural": "query"})


@pytest.mark.parametrize("prediction, gold, llava, lmms", [
    ("yes", "yes", 1, 1),
    ("Yes.", "yes", 1, 1),
    ("left...", "left", 1, 1),          # rstrip('.') removes every trailing dot
    ("yes!", "yes", 0, 1),              # gqa-04
    ("tshirt", "t-shirt", 0, 1),        # gqa-07
    (" no", "no", 0, 1),                # gqa-08
    ("Yes.\n", "yes", 0, 1),            # gqa-12
    ("a dog", "dog", 0, 0),
    ("2", "two", 0, 0),
])
def test_score_one_both_flavours(prediction, gold, llava, lmms):
    assert gqa.score_one(prediction, _item(gold)) == llava
    assert gqa.score_one(prediction, _item(gold), flavour="lmms") == lmms


def test_aggregate_over_balanced_questions_and_missing_predictions(folders):
    items = gqa.load(folders["gqa"])
    # right, wrong, missing, and a wrong answer on the unbalanced question (ignored)
    out = gqa.aggregate(items, ["yes", "red", None, "yes"])
    assert out["accuracy"] == pytest.approx(100 / 3)
    assert out["n"] == 3 and out["missing_balanced"] == 1
    assert out["binary"] == 100.0 and out["open"] == 0.0
    assert gqa.aggregate(items, ["yes", "blue", "left", None])["accuracy"] == 100.0


def test_aggregate_rejects_misaligned_predictions_and_unknown_flavour(folders):
    items = gqa.load(folders["gqa"])
    with pytest.raises(ValueError, match="aligned"):
        gqa.aggregate(items, ["yes"])
    with pytest.raises(ValueError, match="flavour"):
        gqa.score_one("yes", items[0], flavour="official")


def test_malformed_record_names_file_row_and_field(tmp_path):
    records = gqa_records()
    del records["201307252"]["answer"]
    write_gqa(tmp_path, records)
    with pytest.raises(RecordError) as err:
        gqa.load(tmp_path)
    assert (err.value.row, err.value.field) == ("201307252", "answer")
    assert err.value.file.endswith("testdev_balanced_questions.json")


def test_missing_image_is_a_record_error(tmp_path):
    records = gqa_records()
    write_gqa(tmp_path, records)
    (tmp_path / "images" / "n2.jpg").unlink()
    with pytest.raises(RecordError, match="image not found") as err:
        gqa.load(tmp_path)
    assert (err.value.row, err.value.field) == ("201307254", "imageId")
