"""The long-answer split: SynthVQA's family filter and the registered ``synthvqa_describe`` view."""

from __future__ import annotations

import json

import pytest

from stepprune.benchmarks import BENCHMARKS, get_benchmark
from stepprune.benchmarks import synthvqa as s
from stepprune.benchmarks import synthvqa_describe as d
from tests.conftest import make_images

STATS = {"n_objects": 2, "n_texts": 1, "fg_patch_fraction": 0.1}


def _write_split(folder):
    """A native split folder with an existence pair and two describe questions."""
    (folder / "images").mkdir(parents=True)
    make_images(1)[0].save(folder / "images" / "0.png")
    base = {"image": "images/0.png", "subfamily": "random", "evidence": [1, 2], "scene_stats": STATS}
    rows = [
        {**base, "qid": "e1", "family": "existence", "question": "Is there a star?", "prompt": "Is there a star?",
         "answer": "yes", "pair_id": "p"},
        {**base, "qid": "d1", "family": "describe", "subfamily": "detail", "question": "Describe the image in detail.",
         "prompt": "Describe the image in detail.", "answer": "The image shows a large red star.",
         "extra": {"mentions": ["large red star", '"lamp"']}},
        {**base, "qid": "e2", "family": "existence", "question": "Is there a cat?", "prompt": "Is there a cat?",
         "answer": "no", "pair_id": "p"},
        {**base, "qid": "d2", "family": "describe", "subfamily": "detail", "question": "Describe the image in detail.",
         "prompt": "Describe the image in detail.", "answer": "A small blue circle.",
         "extra": {"mentions": ["small blue circle"]}},
    ]
    (folder / s.QUESTIONS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_family_filter_and_limit(tmp_path):
    folder = _write_split(tmp_path / "val")
    assert [it.qid for it in s.load(folder)] == ["e1", "d1", "e2", "d2"]
    assert [it.qid for it in s.load(folder, families="describe")] == ["d1", "d2"]
    assert [it.qid for it in s.load(folder, families=["existence"], limit=1)] == ["e1"]
    assert [it.qid for it in s.load(folder, families="describe", limit=1)] == ["d1"]  # limit after the filter
    with pytest.raises(ValueError, match="unknown SynthVQA famil"):
        s.load(folder, families="captions")


def test_describe_view_is_registered_and_scored_by_mention_recall(tmp_path):
    folder = _write_split(tmp_path / "native" / "test")
    assert get_benchmark("synthvqa_describe") is d and BENCHMARKS["synthvqa_describe"] is d
    items = d.load(tmp_path)  # the generator's layout: <root>/native/test
    assert [it.qid for it in items] == ["d1", "d2"] and all(it.meta["family"] == "describe" for it in items)
    out = d.aggregate(items, ["I see a large red star and the word lamp", None])
    assert out[d.HEADLINE] == pytest.approx(0.5) and out["describe/detail"] == pytest.approx(0.5)
    assert out["n/describe"] == 2 and "overall" not in out and "n/overall" not in out
    assert d.score_one("a large red star", items[0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="other families"):
        d.aggregate(s.load(folder), [""] * 4)
    assert d.MAX_NEW_TOKENS >= 256
