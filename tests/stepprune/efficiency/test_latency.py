"""The latency harness times exactly the path ``PrunedVLM.generate`` takes to its first token."""

import pytest
import torch

import stepprune
from stepprune.efficiency import Stats, first_token, measure
from stepprune.efficiency.costs.stepprune import exactly_k
from stepprune.efficiency.latency import input_size, random_prompt

SMALL_SELECTOR = {"d": 32, "heads": 4}


def _vlms(adapter):
    torch.manual_seed(0)
    methods = {
        "vanilla": stepprune.build_method("vanilla"),
        "fastv@64": stepprune.build_method("fastv", budget=64),
        "visionzip@64": stepprune.build_method("visionzip", budget=64),
        "stepprune@7": stepprune.build_method("stepprune", exactly_k(SMALL_SELECTOR, 7)),
    }
    return {k: stepprune.PrunedVLM(adapter, m) for k, m in methods.items()}


def test_first_token_is_the_first_generated_token(llava):
    prompt = random_prompt(llava, 2, "What color is the square?", seed=1)
    for label, vlm in _vlms(llava).items():
        run = first_token(vlm, prompt)
        gen = vlm.generate(prompt, max_new_tokens=1)
        assert torch.equal(run.token, gen.tokens[:, 0]), label
        assert torch.equal(run.kept, gen.kept), label
        assert run.mean_per_layer.tolist() == gen.visual_per_layer.float().mean(dim=1).tolist()
        s = run.seconds
        assert s["ttft"] == pytest.approx(s["vision"] + s["selection"] + s["prefill"])
        assert min(s.values()) > 0


def test_stepprune_forced_to_k_keeps_exactly_k(llava):
    prompt = random_prompt(llava, 3, "How many objects are there?", seed=2)
    run = first_token(_vlms(llava)["stepprune@7"], prompt)
    assert run.kept.tolist() == [7, 7, 7]


def test_measure_times_every_method_in_one_run(llava):
    prompt = random_prompt(llava, 1, "Is there a red circle?", seed=3)
    out = measure(_vlms(llava), prompt, warmup=1, repeats=3)
    assert list(out) == ["vanilla", "fastv@64", "visionzip@64", "stepprune@7"]
    for label, lat in out.items():
        assert set(lat.parts) == {"vision", "selection", "prefill", "ttft"}
        assert all(s.n == 3 and s.min <= s.p25 <= s.median <= s.p75 for s in lat.parts.values())
    assert out["vanilla"].kept == 576 and out["fastv@64"].kept == 576 and out["visionzip@64"].kept == 64
    assert out["fastv@64"].mean_per_layer == pytest.approx((2 * 576 + 2 * 64) / 4)
    assert input_size(llava) == 96


def test_stats_of_known_samples():
    s = Stats.of([0.004, 0.001, 0.003, 0.002, 0.005])
    assert (s.median, s.p25, s.p75, s.min, s.n) == pytest.approx((3.0, 2.0, 4.0, 1.0, 5))
