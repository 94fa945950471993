"""POPE reader, LLaVA's first-sentence negation parsing vs lmms-eval's strict match, and the guards."""

import pytest

from stepprune.benchmarks import RecordError, pope
from stepprune.benchmarks.fixtures import pope_records, write_pope


def test_load_three_category_files(folders):
    items = pope.load(folders["pope"])
    assert len(items) == 12
    assert [it.meta["category"] for it in items[::4]] == ["random", "popular", "adversarial"]
    assert items[1].qid == "random/2" and items[1].answer == "no"
    assert items[1].prompt == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    assert items[1].image_path.name == "COCO_val2014_000000000001.jpg"
    assert len(pope.load(folders["pope"], split="popular")) == 4
    assert len(pope.load(folders["pope"], limit=2)) == 6  # per category


@pytest.mark.parametrize("prediction, label, llava, lmms", [
    ("Yes", "yes", 1, 1),
    ("Yes.", "yes", 1, 0),                         # pope-02
    ("No.", "no", 1, 0),                           # pope-04
    ("NO", "no", 0, 1),                            # pope-05
    ("Yes, there is a dog in the image.", "yes", 1, 0),   # pope-07
    ("There is no dog in the image.", "no", 1, 0),        # pope-08
    ("It is not.", "no", 1, 0),                    # pope-11
    ("No,there is not", "no", 1, 0),               # "not" is a later word
    ("No,there", "no", 0, 0),                      # commas deleted: "Nothere"
    ("Yes. But there is no dog", "yes", 1, 0),     # only the first sentence counts
    ("", "no", 0, 0),                              # empty reads as yes
    ("Nope", "no", 0, 0),
    ("I cannot tell", "no", 0, 0),
])
def test_score_one_both_flavours(folders, prediction, label, llava, lmms):
    item = next(it for it in pope.load(folders["pope"], split="random") if it.answer == label)
    assert pope.score_one(prediction, item) == llava
    assert pope.score_one(prediction, item, flavour="lmms") == lmms


def test_per_category_metrics_and_mean_f1(folders):
    items = pope.load(folders["pope"])  # labels per category: yes, no, yes, no
    preds = (["Yes", "Yes", "No", "No"]      # random: TP1 FP1 FN1 TN1
             + ["Yes", "No", "Yes", "No"]    # popular: perfect
             + ["Yes", "Yes", "Yes", "Yes"])  # adversarial: always yes
    out = pope.aggregate(items, preds)
    assert out["random/acc"] == out["random/precision"] == out["random/recall"] == out["random/f1"] == 50.0
    assert out["popular/f1"] == 100.0
    assert out["adversarial/precision"] == 50.0 and out["adversarial/recall"] == 100.0
    assert out["adversarial/f1"] == pytest.approx(200 / 3)
    assert out["adversarial/yes_ratio"] == 100.0
    assert out["f1_mean"] == pytest.approx((50 + 100 + 200 / 3) / 3)


def test_zero_yes_predictions_do_not_crash(folders):
    items = pope.load(folders["pope"])
    out = pope.aggregate(items, ["No"] * len(items))
    assert out["random/precision"] == 0.0 and out["random/f1"] == 0.0 and out["random/acc"] == 50.0
    assert out["random/no_yes"] == 1.0 and out["no_yes_categories"] == 3 and out["f1_mean"] == 0.0
    assert pope.aggregate(items, ["Yes"] * len(items))["no_yes_categories"] == 0


def test_lmms_unparseable_answers_and_gold_yes_ratio(folders):
    items = pope.load(folders["pope"], split="random")
    out = pope.aggregate(items, ["Yes.", "no", "yes", "maybe"], flavour="lmms")
    assert out["random/acc"] == 50.0          # the two unparseable answers are wrong
    assert out["random/precision"] == 100.0   # ... but left out of precision and recall
    assert out["random/recall"] == 100.0
    assert out["random/yes_ratio"] == 50.0    # lmms-eval computes it from the labels
    assert out["unparseable"] == 2 and out["all/acc"] == 50.0


def test_missing_predictions_are_left_out_and_counted(folders):
    items = pope.load(folders["pope"], split="random")
    out = pope.aggregate(items, ["Yes", None, "Yes", "No"])
    assert out["random/n"] == 3 and out["missing"] == 1 and out["random/acc"] == 100.0


def test_malformed_label_names_line_and_field(tmp_path):
    records = {c: pope_records(c) for c in pope.CATEGORIES}
    records["popular"][1]["label"] = "maybe"
    write_pope(tmp_path, records)
    with pytest.raises(RecordError) as err:
        pope.load(tmp_path)
    assert (err.value.row, err.value.field) == (2, "label")
    assert err.value.file.endswith("coco_pope_popular.json")


def test_broken_json_line(tmp_path):
    write_pope(tmp_path)
    path = tmp_path / "coco" / "coco_pope_random.json"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(RecordError) as err:
        pope.load(tmp_path)
    assert (err.value.row, err.value.field) == (5, "<json>")
