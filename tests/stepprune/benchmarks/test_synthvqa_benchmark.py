"""stepprune.benchmarks.synthvqa scoring: each family follows its mirrored benchmark's official rule (cases
from the design note benchmarks.md), and aggregate reports per-family accuracy and counts."""

from __future__ import annotations

import pytest

from stepprune.benchmarks import BenchmarkItem
from stepprune.benchmarks import synthvqa as s


def item(family: str, answer: str, subfamily: str = "x", **meta) -> BenchmarkItem:
    return BenchmarkItem(qid=f"{family}-{answer}", prompt="p", answer=answer,
                         meta={"family": family, "subfamily": subfamily, "evidence": [1, 2, 3, 4], **meta})


@pytest.mark.parametrize("pred, gold, llava, lmms", [
    ("Yes", "yes", 1, 1), ("Yes.", "yes", 1, 0), ("No.", "no", 1, 0), ("NO", "no", 0, 1),
    ("Yes, there is a dog.", "yes", 1, 0), ("There is no dog.", "no", 1, 0), ("It is not.", "no", 1, 0),
    ("Yes. But there is no dog", "yes", 1, 0), ("", "yes", 1, 0),
])
def test_existence_uses_pope_parsing(pred, gold, llava, lmms):
    it = item("existence", gold)
    assert (s.score_one(pred, it), s.score_one(pred, it, "lmms")) == (llava, lmms)


@pytest.mark.parametrize("pred, gold, llava, lmms", [
    ("red", "red", 1, 1), ("Red.", "red", 1, 1), ("left...", "left", 1, 1), ("yes!", "yes", 0, 1),
    (" red", "red", 0, 1), ("a star", "star", 0, 0), ("Red.\n", "red", 0, 1),
])
def test_gqa_families_use_exact_match(pred, gold, llava, lmms):
    for fam in ("attribute", "relation"):
        it = item(fam, gold)
        assert (s.score_one(pred, it), s.score_one(pred, it, "lmms")) == (llava, lmms)


@pytest.mark.parametrize("pred, gold, score", [
    ("3", "3", 1), ("three", "3", 1), ("3.", "3", 1), ("eleven", "11", 0), ("There are 3.", "3", 0),
    ("Lamp", "lamp", 1), ("the lamp", "lamp", 1), ("lamp!", "lamp", 1), ("lamps", "lamp", 0),
])
def test_counting_and_text_use_vqa_soft_accuracy(pred, gold, score):
    for fam in ("counting", "text"):
        assert s.score_one(pred, item(fam, gold)) == score


def test_counting_uses_vqa_answer_normalisation():
    it = item("counting", "2")
    assert s.score_one("2", it) == 1 and s.score_one("two", it) == 1 and s.score_one("2.", it) == 1
    assert s.score_one("3", it) == 0 and s.score_one("twelve", item("counting", "12")) == 0  # digits only to ten


@pytest.mark.parametrize("pred, expected", [
    ("A", 1), ("(A)", 1), ("A.", 1), ("A. top left", 1), ("top left", 1), ("It is A", 1),
    ("The answer is A", 0),  # "A" among more than 3 tokens may be an article: the rule defers to the judge
    ("B", 0), ("a", 0), ("A or B", 0), ("A dog is sitting on a mat", 0), ("", 0), ("left", 0),
])
def test_mmbench_uses_rule_based_option_extraction(pred, expected):
    it = item("mc_mmbench", "A", choices=["top left", "top right", "bottom left", "bottom right"])
    assert s.score_one(pred, it) == expected
    assert s.score_one("The answer is C", item("mc_mmbench", "C", choices=it.meta["choices"])) == 1


@pytest.mark.parametrize("pred, llava, lmms", [
    ("B", 1, 1), ("B. cool", 1, 1), ("B.", 0, 1), ("The answer is B.", 1, 0), ("b", 0, 1), (" B", 0, 1),
    ("(B)", 0, 0), ("cool", 0, 0),
])
def test_science_uses_scienceqa_letter_rules(pred, llava, lmms):
    it = item("mc_science", "B", choices=["warm", "cool", "neither"])
    assert (s.score_one(pred, it), s.score_one(pred, it, "lmms")) == (llava, lmms)


def test_science_letter_outside_the_options_is_wrong():
    it = item("mc_science", "B", choices=["warm", "cool"])
    assert s.score_one("B", it) == 1
    assert s.score_one("E", item("mc_science", "E", choices=["warm", "cool"])) == 0  # beyond the 2 options


@pytest.mark.parametrize("pred, gold, llava, lmms", [
    ("Yes", "yes", 1, 1), ("No", "no", 1, 1), ("Not sure", "no", 1, 1), ("Norway", "no", 1, 1),
    ("Y", "yes", 0, 1), ("I think yes", "yes", 0, 0), ("yes.", "yes", 1, 1),
])
def test_mme_uses_calculation_parse(pred, gold, llava, lmms):
    it = item("mme", gold)
    assert (s.score_one(pred, it), s.score_one(pred, it, "lmms")) == (llava, lmms)


def test_describe_scores_mention_recall():
    it = item("describe", "ref", mentions=["large red star", "large red star", "small blue circle", '"lamp"'])
    assert s.score_one("A large red star, a small blue circle and the word lamp.", it) == pytest.approx(0.75)
    pred = "Two large red stars? No: a large red star and a large red star."
    assert s.score_one(pred, it) == pytest.approx(0.5)
    assert s.score_one("nothing", it) == 0.0


def test_aggregate_per_family_overall_and_extras():
    items = [item("existence", "yes", "random", pair_id="p1"),
             item("existence", "no", "random", pair_id="p1"),
             item("counting", "3", "all"), item("mme", "yes", "count", pair_id="m1"),
             item("mme", "no", "count", pair_id="m1"),
             item("describe", "ref", "detail", mentions=["large red star"])]
    preds = ["yes", "yes", "3", "yes", "no", None]
    out = s.aggregate(items, preds)
    assert out["overall"] == pytest.approx(4 / 5) and out["n/overall"] == 5
    assert out["existence"] == 0.5 and out["n/existence"] == 2 and out["existence/random"] == 0.5
    assert out["counting"] == 1.0 and out["mme"] == 1.0 and out["mme/acc_plus"] == 1.0
    assert out["describe"] == 0.0 and out["n/describe"] == 1
    assert out["existence/f1"] == pytest.approx(2 / 3)
    assert s.aggregate(items, ["no"] * 6)["existence/f1"] == 0.0  # never "yes": no crash
    with pytest.raises(ValueError, match="predictions"):
        s.aggregate(items, preds[:-1])
    with pytest.raises(ValueError, match="flavour"):
        s.score_one("yes", items[0], "other")


def test_token_recall():
    it = item("counting", "1")
    assert s.token_recall(it, [1, 2, 99]) == 0.5
    assert s.token_recall(it, range(576)) == 1.0
    assert s.token_recall(item("existence", "no", evidence=[]), [1]) is None
