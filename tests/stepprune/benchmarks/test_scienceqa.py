"""ScienceQA-IMG reader and eval_science_qa.py letter extraction, with the choice-count check."""

import pytest

from stepprune.benchmarks import RecordError, scienceqa
from stepprune.benchmarks.fixtures import scienceqa_records, write_scienceqa

SUFFIX = "\nAnswer with the option's letter from the given choices directly."


def test_load_keeps_test_problems_with_an_image(folders):
    items = scienceqa.load(folders["scienceqa"])
    assert [it.qid for it in items] == ["1", "2"]
    assert items[0].prompt == "Which shape is on the left?\nA. square\nB. circle" + SUFFIX
    assert items[1].prompt == ("Context: Look at the picture.\nWhich color is the circle?\n"
                               "A. red\nB. green\nC. blue\nD. yellow" + SUFFIX)
    assert [it.answer for it in items] == ["A", "C"]
    assert items[0].image_path.parts[-3:] == ("test", "1", "image.png")
    assert [it.qid for it in scienceqa.load(folders["scienceqa"], split="train")] == ["4"]
    assert len(scienceqa.load(folders["scienceqa"], limit=1)) == 1


@pytest.mark.parametrize("prediction, llava, lmms", [
    ("A", 1, 1),
    ("A. square", 1, 1),
    ("A.", 0, 1),                                   # scienceqa_img-03
    ("The answer is A.", 1, 0),                     # scienceqa_img-06
    ("The answer is A", 0, 0),                      # the regex needs a character after the letter
    ("a", 0, 1),                                    # scienceqa_img-08
    (" A", 0, 1),                                   # scienceqa_img-11
    ("(A)", 0, 0),
    ("square", 0, 0),
    ("The answer is A. The answer is B.", 0, 0),    # two matches
    ("B", 0, 0),
])
def test_score_one_both_flavours(folders, prediction, llava, lmms):
    item = scienceqa.load(folders["scienceqa"])[0]  # answer A of two choices
    assert scienceqa.score_one(prediction, item) == llava
    assert scienceqa.score_one(prediction, item, flavour="lmms") == lmms


def test_letter_beyond_the_choices_is_wrong(folders):
    item = scienceqa.load(folders["scienceqa"])[0]
    item.answer, item.meta["answer_index"] = "E", 4  # pretend the gold were E: still only 2 choices
    assert scienceqa.details("E", item)["letter"] == "E"
    assert scienceqa.score_one("E", item) == 0.0


def test_missing_prediction_leaves_the_img_denominator_in_llava_flavour(folders):
    items = scienceqa.load(folders["scienceqa"])
    out = scienceqa.aggregate(items, ["A", None])                    # scienceqa_img-14
    assert out["img_accuracy"] == 100.0 and out["img_accuracy_missing_as_wrong"] == 50.0
    assert out["missing"] == 1
    assert scienceqa.aggregate(items, ["A", None], flavour="lmms")["img_accuracy"] == 50.0


@pytest.mark.parametrize("pid, field, value, message", [
    ("2", "choices", "red", "expected list"),
    ("2", "answer", 7, "outside"),
    ("1", "question", None, "expected str"),
])
def test_malformed_problem_names_pid_and_field(tmp_path, pid, field, value, message):
    problems, splits = scienceqa_records()
    problems[pid][field] = value
    write_scienceqa(tmp_path, problems, splits)
    with pytest.raises(RecordError, match=message) as err:
        scienceqa.load(tmp_path)
    assert (err.value.row, err.value.field) == (pid, field)
    assert err.value.file.endswith("problems.json")


def test_unknown_pid_in_splits(tmp_path):
    problems, splits = scienceqa_records()
    splits["test"].append("99")
    write_scienceqa(tmp_path, problems, splits)
    with pytest.raises(RecordError, match="not found") as err:
        scienceqa.load(tmp_path)
    assert err.value.file.endswith("pid_splits.json") and err.value.field == "99"
