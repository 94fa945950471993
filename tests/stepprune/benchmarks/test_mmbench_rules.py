"""MMBench answer extraction: the rule-based prefetch (with its article trap) and the static extractor."""

import pytest

from stepprune.benchmarks.mmbench_rules import can_infer, extract_static

OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}
NO_TEXT_MATCH = {"A": "red", "B": "green", "C": "blue", "D": "yellow"}


@pytest.mark.parametrize("answer, expected", [
    ("A", "A"),
    ("A.", "A"),
    ("(B)", "B"),
    ("B. dog", "B"),
    ("The answer is C", "C"),
    ("C:", "C"),
    ("E", "E"),                                  # E is a prefetch letter even on 4 options
    ("A dog is sitting on a mat", None),         # the article trap: more than 3 tokens and "A"
    ("A dog sat", "A"),                          # 3 tokens: the trap does not apply
    ("a", None),
    ("A or B", None),
    ("", None),
])
def test_can_infer_option_forms(answer, expected):
    assert can_infer(answer, NO_TEXT_MATCH) == expected


def test_can_infer_falls_back_to_a_unique_option_text():
    assert can_infer("It is a cat.", OPTIONS) == "A"
    assert can_infer("a cat or a dog", OPTIONS) is None         # two option texts: ambiguous
    assert can_infer("A dog is sitting on a mat", OPTIONS) == "B"  # trap skipped, then the text rule


@pytest.mark.parametrize("answer, expected", [
    ("A or B", "A"),          # a leading standalone letter wins
    ("选B", "B"),
    ("答案是B。", "B"),
    ("The correct answer is (C).", "C"),
    ('"D."', "D"),
    ("nothing here", ""),
    ("", ""),
])
def test_static_extractor(answer, expected):
    assert extract_static(answer, ["A", "B", "C", "D"]) == expected


def test_cn_answers_need_the_judge_but_pass_the_static_extractor():
    assert can_infer("选B", NO_TEXT_MATCH) is None
    assert can_infer("答案是B。", NO_TEXT_MATCH) is None
