"""The papers' Avg. retention column."""

import pytest

from stepprune.benchmarks import PAPER_BENCHMARKS, headline_scores, retention
from stepprune.benchmarks import get_benchmark


def test_fastv_192_row_recomputes_to_89_6():
    # FastV @ 192 tokens on LLaVA-1.5-7B: the printed per-benchmark ratios average to 89.6 %
    ratios = [85.1, 94.6, 86.6, 75.4, 96.8, 85.5, 90.2, 94.5, 97.4]
    names = [f"b{i}" for i in range(len(ratios))]
    vanilla = {n: 50.0 + i for i, n in enumerate(names)}
    method = {n: r / 100 * vanilla[n] for n, r in zip(names, ratios)}
    out = retention(method, vanilla, names)
    assert out.ratios == pytest.approx(dict(zip(names, ratios)))
    assert round(out.mean, 1) == 89.6


def test_ratios_above_100_are_kept_and_mme_uses_p_plus_c():
    out = retention({"mme": 1612.0, "pope": 90.27}, {"mme": 1862.0, "pope": 85.9}, ["mme", "pope"])
    assert out.ratios["mme"] == pytest.approx(86.57, abs=0.01)
    assert out.ratios["pope"] == pytest.approx(105.09, abs=0.01)
    assert out.mean == pytest.approx((out.ratios["mme"] + out.ratios["pope"]) / 2)
    assert out.as_dict()["retention/avg"] == out.mean


def test_declared_list_must_be_complete():
    scores = {b: 50.0 for b in PAPER_BENCHMARKS}
    assert retention(scores, scores).mean == 100.0
    partial = {k: v for k, v in scores.items() if k != "textvqa"}
    with pytest.raises(ValueError, match="textvqa"):
        retention(partial, scores)
    with pytest.raises(ValueError, match="positive"):
        retention(scores, {**scores, "gqa": 0.0})


def test_headline_scores_from_aggregates(folders):
    results = {}
    for name in ("mme", "pope", "gqa"):
        module = get_benchmark(name)
        items = module.load(folders[name])
        results[name] = module.aggregate(items, [it.answer for it in items])
    assert headline_scores(results) == {"mme": 2800.0, "pope": 100.0, "gqa": 100.0}
    pope = get_benchmark("pope")
    random_only = pope.load(folders["pope"], split="random")
    with pytest.raises(ValueError, match="three"):
        headline_scores({"pope": pope.aggregate(random_only, [it.answer for it in random_only])})
    mme = get_benchmark("mme")
    perception = mme.load(folders["mme"], split="perception")
    with pytest.raises(ValueError, match="P\\+C"):
        headline_scores({"mme": mme.aggregate(perception, [it.answer for it in perception])})
