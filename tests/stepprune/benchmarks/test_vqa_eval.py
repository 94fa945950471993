"""The EvalAI answer processor's quirks and the VQA soft accuracy."""

import pytest

from stepprune.benchmarks.vqa_eval import CONTRACTIONS, normalize, normalize_vqav2_lmms, soft_accuracy


@pytest.mark.parametrize("raw, expected", [
    ("Yes, it is.", "yes it is"),
    ("man's", "man 's"),            # tokenise splits 's off
    ("t-shirt", "t shirt"),         # punctuation not touching a space becomes a space
    ("hello - world", "hello world"),  # ... and is deleted when it touches one
    ("1,000", "1000"),
    ("3.", "3"),                    # the malformed look-behind does not protect "digit then period"
    ("3.5", "3.5"),
    ("eleven", "eleven"),           # numbers only up to ten
    ("Ten", "10"),
    ("none", "0"),
    ("The dog", "dog"),
    ("a", ""),
    ("dont", "don't"),              # contraction keys have no apostrophe
    ("don't", "don't"),
    ("Im", "im"),                   # capitalised keys can never match after lowercasing
    ("$5", "$5"),                   # $ % # & * : ' are not punctuation here
    ("50%", "50%"),
    ("café", "café"),               # no unicode folding
    ("red\tcar\n", "red car"),
    ("(left)", "left"),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_period_strip_is_capped_at_32_removals():
    assert normalize("." * 40 + "x") == "." * 8 + "x"


def test_contraction_table_irregular_entries():
    assert CONTRACTIONS["somebody'd"] == "somebodyd"
    assert CONTRACTIONS["let's"] == "let's"
    assert "lets" not in CONTRACTIONS
    assert CONTRACTIONS["yall'll"] == "y'all'll"


def test_lmms_vqav2_variant_skips_tokenise():
    assert normalize_vqav2_lmms("man's") == "man's"
    assert normalize_vqav2_lmms("Yes, it is.") == "yes it is"   # the comma touches a space: deleted
    assert normalize_vqav2_lmms("1,000 dogs") == "1000 dogs"


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_accuracy_by_number_of_matching_annotators(k, expected):
    refs = ["cat"] * k + ["dog"] * (10 - k)
    assert soft_accuracy("cat", refs) == pytest.approx(expected)


def test_soft_accuracy_equivalences():
    assert soft_accuracy(normalize(""), [normalize("a")] * 10) == 1.0  # empty vs bare article
    assert soft_accuracy(normalize("eleven"), [normalize("11")] * 10) == 0.0
    assert soft_accuracy(normalize("t-shirt"), [normalize("t shirt")] * 10) == 1.0
    assert soft_accuracy(normalize("tshirt"), [normalize("t-shirt")] * 10) == 0.0
    with pytest.raises(ValueError):
        soft_accuracy("x", [])
