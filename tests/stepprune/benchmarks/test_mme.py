"""MME reader (both folder layouts) and calculation.py scoring, with its crash paths guarded."""

import pytest

from stepprune.benchmarks import RecordError, mme
from stepprune.benchmarks.fixtures import mme_records, write_mme

SUFFIX = "\nAnswer the question using a single word or phrase."


def test_load_all_subtasks_nested_and_flat(folders):
    items = mme.load(folders["mme"])
    assert len(items) == 28
    assert [it.meta["subtask"] for it in items[::2]] == list(mme.PERCEPTION + mme.COGNITION)
    assert items[0].qid == "existence/0001.jpg#0" and items[0].meta["image"] == "existence/0001.jpg"
    assert items[0].prompt == "Is there a square in this existence image?" + SUFFIX
    assert [it.answer for it in items[:2]] == ["Yes", "No"]
    # the double-space variant of the instruction is removed too
    count = [it for it in items if it.meta["subtask"] == "count"]
    assert count[1].prompt == "Is there a triangle in this count image?" + SUFFIX
    assert count[1].meta["question"].endswith("?  Please answer yes or no.")
    artwork = [it for it in items if it.meta["subtask"] == "artwork"]
    assert artwork[0].image_path.parent.name == "images"          # nested layout
    assert items[0].image_path.parent.name == "existence"         # flat layout
    assert next(it for it in items if it.meta["subtask"] == "OCR").image_path.suffix == ".png"


def test_unwrapped_layout_splits_and_limit(tmp_path):
    write_mme(tmp_path, mme_records(images_per_subtask=2), wrapped=False)
    assert len(mme.load(tmp_path)) == 56
    assert len(mme.load(tmp_path, split="cognition")) == 16
    assert len(mme.load(tmp_path, split="perception", limit=1)) == 20
    assert {it.meta["subtask"] for it in mme.load(tmp_path, split="OCR")} == {"OCR"}
    with pytest.raises(ValueError, match="unknown MME split"):
        mme.load(tmp_path, split="vision")


@pytest.mark.parametrize("prediction, llava, lmms", [
    ("Yes", "yes", "yes"),
    ("No", "no", "no"),
    ("yes.", "yes", "yes"),
    ("Not sure", "no", "no"),
    ("Nope", "no", "no"),
    ("None", "no", "no"),
    ("Snow", "no", "no"),
    ("Norway", "no", "no"),
    ("Y", "other", "yes"),        # mme-09
    ("n", "other", "no"),
    ("I think yes", "other", "other"),
    (" yes", "yes", "yes"),
    ("Maybe", "other", "other"),
])
def test_parse_label(prediction, llava, lmms):
    assert mme.parse_label(prediction) == llava
    assert mme.parse_label(prediction, "lmms") == lmms


def _one_subtask(folders, subtask="existence"):
    return [it for it in mme.load(folders["mme"]) if it.meta["subtask"] == subtask]


@pytest.mark.parametrize("preds, score", [
    (["Yes", "No"], 200.0),   # mme-14: both right
    (["Yes", "Yes"], 50.0),   # mme-15: always yes: acc 50, acc+ 0
    (["No", "Yes"], 0.0),     # mme-16: both wrong
])
def test_pair_scores(folders, preds, score):
    items = _one_subtask(folders)
    for flavour in ("llava", "lmms"):
        out = mme.aggregate(items, preds, flavour)
        assert out["existence"] == score and out["total"] == score


def test_totals_perception_cognition(folders):
    items = mme.load(folders["mme"])
    perfect = [it.answer for it in items]
    out = mme.aggregate(items, perfect)
    assert (out["perception"], out["cognition"], out["total"]) == (2000.0, 800.0, 2800.0)
    preds = ["Yes"] * len(items)  # always yes: 50 per subtask
    out = mme.aggregate(items, preds)
    assert (out["perception"], out["cognition"]) == (500.0, 200.0)
    assert out["existence/acc"] == 50.0 and out["existence/acc_plus"] == 0.0


def test_multiline_prediction_is_scored_and_flagged(folders):
    items = _one_subtask(folders)
    out = mme.aggregate(items, ["Yes\nThere is a square.", "No\tit is not"])
    assert out["existence"] == 200.0 and out["multiline"] == 2


def test_pairs_are_formed_per_subtask_and_odd_images_flagged(folders):
    existence, count = _one_subtask(folders, "existence"), _one_subtask(folders, "count")
    interleaved = [existence[0], count[0], existence[1], count[1]]
    out = mme.aggregate(interleaved, [it.answer for it in interleaved])
    assert out["broken_pairs"] == 0 and out["total"] == 400.0  # each subtask is its own file officially
    three = existence + [existence[0]]  # an image asked three times
    out = mme.aggregate(three, ["Yes", "No", "Yes"])
    assert out["broken_pairs"] == 1 and out["unpaired_images"] == 1


def test_reordered_answer_file_is_flagged(tmp_path):
    write_mme(tmp_path, {"existence": mme_records(2)["existence"]})
    items = mme.load(tmp_path)
    reordered = [items[0], items[2], items[1], items[3]]
    out = mme.aggregate(reordered, [it.answer for it in reordered])
    assert out["broken_pairs"] == 2
    assert out["existence"] == 200.0  # scored by image, not by consecutive lines


def test_missing_prediction_is_wrong(folders):
    items = _one_subtask(folders)
    out = mme.aggregate(items, ["Yes", None])
    assert out["existence"] == 50.0 and out["missing"] == 1 and out["other"] == 1


@pytest.mark.parametrize("content, row, field", [
    ("Q1? Please answer yes or no.\tYes\n", 1, "<lines>"),
    ("Q1? Please answer yes or no.\tYes\nQ2? Please answer yes or no. No\n", 2, "question"),
    ("Q1? Please answer yes or no.\tMaybe\nQ2? Please answer yes or no.\tNo\n", 1, "answer"),
])
def test_malformed_txt_raises_record_error(tmp_path, content, row, field):
    write_mme(tmp_path, {"color": mme_records()["color"]})
    txt = tmp_path / mme.RELEASE_DIR / "color" / "0001.txt"
    txt.write_text(content, encoding="utf-8")
    with pytest.raises(RecordError) as err:
        mme.load(tmp_path)
    assert (err.value.row, err.value.field) == (row, field) and err.value.file.endswith("0001.txt")
