"""The train/inference gap probe: parity when the selection keeps everything, and the summary table."""

import dataclasses
import math

import pytest
import torch

import stepprune
from stepprune.methods.evidence_oracle import evidence_first
from stepprune.train_gap import CONDITIONS, answer_nll_rows, render, summarise
from tests.conftest import make_images

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass
class Item:
    qid: str
    prompt: str
    answer: object
    meta: dict
    seed: int

    def load_image(self):
        return make_images(1, seed=self.seed)[0]


ITEMS = [Item("q0", "What color is the square?", "red", {"family": "attribute", "evidence": [0, 1, 2]}, 0),
         Item("q1", "How many objects are there?", ["three", "3"], {"family": "counting", "evidence": []}, 1),
         Item("q2", "Is there a red circle?", "yes", {"family": "attribute", "evidence": [3, 3]}, 2)]


def _stepprune(adapter, **cfg):
    torch.manual_seed(0)
    base = {"d": 32, "heads": 4, "total_steps": 10}
    return stepprune.build_method("stepprune", {**base, **cfg}).bind(adapter)


def test_a_selection_of_every_token_reproduces_vanilla(llava):
    n = llava.vision_features(llava.prepare(make_images(1), ["x"])).tokens.shape[1]
    method = _stepprune(llava, k_min=n, k_max=n)  # the loop must pick all N tokens
    rows = answer_nll_rows(stepprune.PrunedVLM(llava, method), ITEMS[:2], step=9)
    assert [r["qid"] for r in rows] == ["q0", "q1"] and [r["family"] for r in rows] == ["attribute", "counting"]
    for r in rows:
        assert r["kept"] == n
        # All tokens, whichever way they are chosen: the pruned paths equal the unpruned model.
        assert r["selection"] == pytest.approx(r["vanilla"], abs=1e-4)
        assert r["random"] == pytest.approx(r["vanilla"], abs=1e-4)
        assert r["evidence"] == pytest.approx(r["vanilla"], abs=1e-4)
        assert abs(r["blind"] - r["vanilla"]) > 1e-3
        assert all(math.isfinite(r[c]) and r[c] > 0 for c in CONDITIONS)


def test_a_small_selection_differs_from_vanilla_and_random_is_seeded(llava):
    method = _stepprune(llava, k_max=8)
    vlm = stepprune.PrunedVLM(llava, method)
    a = answer_nll_rows(vlm, ITEMS, step=9, seed=3)
    b = answer_nll_rows(vlm, ITEMS, step=9, seed=3)
    assert [r["random"] for r in a] == [r["random"] for r in b]
    for r in a:
        assert 1 <= r["kept"] <= 8
        assert abs(r["selection"] - r["vanilla"]) > 1e-4


def test_evidence_first_keeps_the_evidence_then_fills_at_random():
    gen = torch.Generator().manual_seed(0)
    perm = torch.tensor([7, 3, 5, 0, 9, 1, 2, 8, 4, 6])
    got = evidence_first([9, 2, 2], perm, 4, gen)
    assert got.tolist() == [2, 3, 7, 9]  # both evidence patches (once each), then perm's first two others
    few = evidence_first([1, 4, 6, 8, 9], perm, 3, gen).tolist()  # k < |evidence|: a random 3 of them, sorted
    assert few == sorted(few) and len(set(few)) == 3 and set(few) <= {1, 4, 6, 8, 9}
    assert evidence_first([], perm, 3, gen).tolist() == [3, 5, 7]


def test_the_evidence_condition_needs_evidence_on_every_item(llava):
    plain = [dataclasses.replace(it, meta={"family": it.meta["family"]}) for it in ITEMS[:2]]
    rows = answer_nll_rows(stepprune.PrunedVLM(llava, _stepprune(llava, k_max=8)), plain, step=9)
    assert all("evidence" not in r for r in rows)
    table = render(summarise(rows)).splitlines()
    assert "evidence" not in table[0] and "random" in table[0]


def test_qwen_rows_are_finite(qwen):
    rows = answer_nll_rows(stepprune.PrunedVLM(qwen, _stepprune(qwen, k_max=6)), ITEMS[:1], step=9)
    assert rows[0]["kept"] <= 6 and all(math.isfinite(rows[0][c]) for c in CONDITIONS)


def test_summary_means_overall_and_per_family():
    def row(fam, v, k):
        return {"qid": "", "family": fam, "kept": k, **{c: v for c in CONDITIONS}}

    s = summarise([row("b", 1.0, 10), row("a", 3.0, 20), row("b", 2.0, 30)])
    assert list(s) == ["all", "a", "b"]
    assert s["all"]["n"] == 3 and s["all"]["selection"] == pytest.approx(2.0) and s["all"]["kept"] == 20
    assert s["b"]["train_path"] == pytest.approx(1.5) and s["b"]["kept"] == 20 and s["a"]["n"] == 1
    table = render(s).splitlines()
    assert len(table) == 4 and table[0].split()[:3] == ["family", "n", "kept"] and table[1].startswith("all")


def test_a_question_s_nll_does_not_depend_on_its_batch(llava):
    vlm = stepprune.PrunedVLM(llava, _stepprune(llava, k_max=8))
    one = answer_nll_rows(vlm, ITEMS, step=9, batch_size=1)
    three = answer_nll_rows(vlm, ITEMS, step=9, batch_size=3)
    for a, b in zip(one, three):
        assert a["kept"] == b["kept"]
        for c in ("vanilla", "blind", "random", "evidence", "selection"):
            assert a[c] == pytest.approx(b[c], abs=1e-4), c


def test_per_sample_lm_loss_averages_to_the_batch_loss(llava):
    prompt = llava.prepare(make_images(3), ["What color?", "How many?", "Is it red?"], ["red", "three 3", "yes"])
    vis = llava.vision_features(prompt)
    n = vis.tokens.shape[1]
    tokens = stepprune.VisualTokens(llava.project(vis.tokens), torch.arange(n)[None].expand(3, -1),
                                    torch.full((3,), n))
    res = llava.forward(llava.splice(prompt, tokens, vis, "original"))
    per = llava.lm_loss(res, per_sample=True)
    counts = (res.state.labels[:, 1:] != -100).sum(dim=1).float()
    assert per.shape == (3,) and float((per * counts).sum() / counts.sum()) == pytest.approx(float(llava.lm_loss(res)),
                                                                                             abs=1e-5)
    assert len(set(round(v, 4) for v in per.tolist())) == 3


def test_visionselector_rows(llava):
    method = stepprune.build_method("visionselector", {"budget": 16, "total_steps": 10})
    rows = answer_nll_rows(stepprune.PrunedVLM(llava, method), ITEMS[:2], step=9)
    assert [r["kept"] for r in rows] == [16, 16] and all(math.isfinite(r[c]) for r in rows for c in CONDITIONS)
