"""TextVQA reader (OCR tokens in LLaVA's 3-line prompt) and the m4c soft accuracy."""

import pytest

from stepprune.benchmarks import RecordError, textvqa
from stepprune.benchmarks.base import BenchmarkItem
from stepprune.benchmarks.fixtures import textvqa_records, write_textvqa

SUFFIX = "\nAnswer the question using a single word or phrase."


def test_load_builds_the_three_line_ocr_prompt(folders):
    items = textvqa.load(folders["textvqa"])
    assert [it.qid for it in items] == ["34602", "34603", "34604", "34605"]
    assert items[0].prompt == "what brand is this?\nReference OCR token: coca, cola, $5" + SUFFIX
    assert items[2].prompt == "what is written on the sign?\nReference OCR token: " + SUFFIX
    assert all(len(it.prompt.split("\n")) == 3 for it in items)
    assert items[0].meta["prompt_lmms"] == "What brand is this?" + SUFFIX
    assert items[0].image_path.name == "0a1b2c3d4e5f6789.jpg"


def test_llava_rekeying_quirk_uses_the_last_duplicate(folders):
    items = textvqa.load(folders["textvqa"])
    assert items[0].meta["llava_answers"] == ["pepsi"] * 10
    assert "llava_answers" not in items[3].meta
    assert textvqa.score_one("Coca Cola", items[0], flavour="lmms") == 1.0
    assert textvqa.score_one("Coca Cola", items[0]) == 0.0
    assert textvqa.score_one("pepsi", items[0]) == 1.0


def _item(*answers: str) -> BenchmarkItem:
    return BenchmarkItem(qid="q", prompt="", answer=list(answers))


@pytest.mark.parametrize("prediction, answers, expected", [
    ("", ["a"] * 10, 1.0),                    # textvqa-09: both sides normalise to ""
    ("$5", ["5"] * 10, 0.0),                  # textvqa-04
    ("1st", ["first"] * 10, 0.0),             # textvqa-07
    ("Stop.", ["stop"] * 10, 1.0),
    ("coke", ["coca cola"] * 7 + ["coke"] * 3, 0.9),
    ("man's", ["man 's"] * 10, 1.0),          # the full processor splits 's
])
def test_soft_accuracy_cases_agree_across_flavours(prediction, answers, expected):
    for flavour in ("llava", "lmms"):
        assert textvqa.score_one(prediction, _item(*answers), flavour) == pytest.approx(expected)


def test_aggregate(folders):
    items = textvqa.load(folders["textvqa"])
    out = textvqa.aggregate(items, ["coca cola", "5", "stop", None], flavour="lmms")
    assert out["accuracy"] == 75.0 and out["missing"] == 1


def test_missing_ocr_entry(tmp_path):
    questions, ocr = textvqa_records()
    write_textvqa(tmp_path, questions, ocr[:1])
    with pytest.raises(RecordError, match="no OCR entry") as err:
        textvqa.load(tmp_path)
    assert (err.value.row, err.value.field) == (2, "image_id")


def test_question_with_newline_would_break_llava_scorer(tmp_path):
    questions, ocr = textvqa_records()
    questions[1]["question"] = "how much\ndoes it cost?"
    write_textvqa(tmp_path, questions, ocr)
    with pytest.raises(RecordError) as err:
        textvqa.load(tmp_path)
    assert (err.value.row, err.value.field) == (1, "question")
    assert err.value.file.endswith("TextVQA_0.5.1_val.json")
