"""VQAv2 val reader, the lmms-eval val soft accuracy and LLaVA's submission answers."""

import pytest

from stepprune.benchmarks import RecordError, vqav2
from stepprune.benchmarks.base import BenchmarkItem
from stepprune.benchmarks.fixtures import vqav2_records, write_vqav2


def test_load_joins_questions_and_annotations(folders):
    items = vqav2.load(folders["vqav2"])
    assert [it.qid for it in items] == ["1000", "1001", "2000"]
    assert items[0].prompt == "What color is the square?\nAnswer the question using a single word or phrase."
    assert len(items[0].answer) == 10 and items[0].meta["answer_type"] == "other"
    assert items[2].image_path.name == "COCO_val2014_000000000002.jpg"
    assert len(vqav2.load(folders["vqav2"], limit=1)) == 1


@pytest.mark.parametrize("prediction, index, expected", [
    ("red", 0, 1.0),        # 6 annotators
    ("Dark red.", 0, 0.9),  # 3 annotators
    ("orange", 0, 0.3),
    ("blue", 0, 0.0),
    ("one", 1, 1.0),        # "one" -> "1": 8 annotators after normalising both sides
    ("2", 1, 0.6),
    ("Yes", 2, 1.0),
])
def test_soft_accuracy_on_fixture(folders, prediction, index, expected):
    item = vqav2.load(folders["vqav2"])[index]
    for flavour in ("llava", "lmms"):  # the local score is lmms-eval's val rule in both flavours
        assert vqav2.score_one(prediction, item, flavour) == pytest.approx(expected)


def _item(*answers: str) -> BenchmarkItem:
    records = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]
    return BenchmarkItem(qid="q", prompt="", answer=list(answers),
                         meta={"answer_records": records, "question_id": 7})


@pytest.mark.parametrize("prediction, reference, expected", [
    ("eleven", "11", 0.0),        # vqav2-04
    ("t-shirt", "t shirt", 1.0),  # vqav2-16
    ("tshirt", "t-shirt", 0.0),   # vqav2-17
    ("café", "cafe", 0.0),        # vqav2-20
    ("man's", "man's", 1.0),      # no tokenise step on either side
])
def test_quirk_cases(prediction, reference, expected):
    assert vqav2.score_one(prediction, _item(*[reference] * 10)) == expected


def test_leave_one_out_drops_equal_answer_records():
    # lmms-eval leaves out records equal to the current one; without answer ids identical records all leave
    records = [{"answer": "yes"}] * 10
    item = BenchmarkItem(qid="q", prompt="", answer=["yes"] * 10, meta={"answer_records": records})
    assert vqav2.score_one("yes", item) == 0.0
    assert vqav2.score_one("yes", _item(*["yes"] * 10)) == 1.0


def test_llava_submission_answer():
    item = _item(*["yes"] * 10)
    assert vqav2.details("Yes, it is.", item)["llava_submission_answer"] == "yes it is"
    assert vqav2.details("man's", item)["llava_submission_answer"] == "man 's"
    assert vqav2.details("man's", item)["normalized"] == "man's"
    assert vqav2.submission([item, item], ["Two.", None]) == [{"question_id": 7, "answer": "2"},
                                                             {"question_id": 7, "answer": ""}]


def test_aggregate_per_answer_type(folders):
    items = vqav2.load(folders["vqav2"])
    out = vqav2.aggregate(items, ["red", "2", None])
    assert out["accuracy"] == pytest.approx(100 * 1.6 / 3)
    assert out["answer_type/other"] == 100.0 and out["answer_type/number"] == pytest.approx(60.0)
    assert out["answer_type/yes/no"] == 0.0 and out["missing"] == 1


def test_question_without_annotation(tmp_path):
    questions, annotations = vqav2_records()
    write_vqav2(tmp_path, questions, annotations[:2])
    with pytest.raises(RecordError, match="no annotation") as err:
        vqav2.load(tmp_path)
    assert (err.value.row, err.value.field) == (2, "question_id")


def test_malformed_answer_record(tmp_path):
    questions, annotations = vqav2_records()
    annotations[1]["answers"][3] = {"answer": 7}
    write_vqav2(tmp_path, questions, annotations)
    with pytest.raises(RecordError) as err:
        vqav2.load(tmp_path)
    assert (err.value.row, err.value.field) == (1, "answer")
    assert err.value.file.endswith("v2_mscoco_val2014_annotations.json")
