"""Pruned predictions for benchmark items: what each sample kept at prefill and what was left cached at the end."""

import pytest
import torch

import stepprune
from stepprune.benchmarks.base import BenchmarkItem
from stepprune.evaluation import Prediction, predict
from tests.conftest import make_images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_predictions_record_the_cache_left_by_decode_time_eviction(llava, tmp_path):
    items = []
    for i, im in enumerate(make_images(3, seed=4)):
        im.save(tmp_path / f"{i}.png")
        items.append(BenchmarkItem(str(i), "Describe the image in detail.", "ref", image_path=tmp_path / f"{i}.png"))
    method = stepprune.build_method("dyrate", schedule=[0.5, 0.25])
    preds = predict(stepprune.PrunedVLM(llava, method), items, batch_size=2, max_new_tokens=4)
    assert [p.qid for p in preds] == ["0", "1", "2"]
    for p in preds:
        assert p.visual_per_layer == [576] * 4  # prefill is unpruned
        assert p.cached_visual_per_layer in ([576, 576, 288, 288], [576, 576, 144, 144])  # after 1 or 2+ steps
    assert Prediction(**{k: v for k, v in preds[0].to_row().items() if k != "cached_visual_per_layer"}
                      ).cached_visual_per_layer == []  # rows written before the field existed still load


def test_distractor_share_counts_kept_tokens_on_other_questions_evidence_only():
    from types import SimpleNamespace

    from stepprune.evaluation import distractor_share

    items = [BenchmarkItem("a", "p", "x", meta={"evidence": [0, 1]}),
             BenchmarkItem("b", "p", "x", meta={"evidence": [5]}),
             BenchmarkItem("c", "p", "x", meta={"evidence": []}),   # no evidence: skipped
             BenchmarkItem("d", "p", "x", meta={"evidence": [9]})]  # nothing kept: skipped
    union = {"a": [0, 1, 5, 6], "b": [0, 1, 5, 6], "c": [0, 1, 5, 6], "d": [9, 10]}
    preds = [SimpleNamespace(final_index=[0, 5, 6, 30]),  # 5 and 6 are about other questions: 2 of 4
             SimpleNamespace(final_index=[5, 7]),  # its own evidence and background: 0 of 2
             SimpleNamespace(final_index=[0, 1]), SimpleNamespace(final_index=[])]
    assert distractor_share(items, preds, union) == pytest.approx((0.5 + 0.0) / 2)
    assert distractor_share(items[2:], preds[2:], union) is None
    assert distractor_share(items, preds, {}) is None  # no image evidence for any item
