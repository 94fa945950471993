"""The sweep's winner: best last metric, ties broken by trial id so a restore names the same winner."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.sweep import pick_best

ROOT = Path(__file__).resolve().parents[2]


def _result(name: str, value, error=None):
    return SimpleNamespace(path=f"/x/tune/t/{name}", metrics={"val_objective": value}, error=error,
                           config={"params": {"name": name}})


def test_max_picks_the_largest_and_min_the_smallest():
    rs = [_result("a", 0.2), _result("b", 0.7), _result("c", 0.5)]
    assert pick_best(rs, "val_objective", "max").config["params"]["name"] == "b"
    assert pick_best(rs, "val_objective", "min").config["params"]["name"] == "a"


def test_a_tie_goes_to_the_same_trial_whatever_the_order():
    rs = [_result("trial_00001", 0.5), _result("trial_00000", 0.5), _result("trial_00002", 0.1)]
    for order in (rs, rs[::-1], [rs[2], rs[0], rs[1]]):
        assert pick_best(order, "val_objective", "max").config["params"]["name"] == "trial_00000"


def test_missing_and_non_finite_metrics_are_skipped():
    rs = [_result("a", None), _result("b", float("nan")), _result("c", 0.1), _result("d", float("inf"))]
    assert pick_best(rs, "val_objective", "max").config["params"]["name"] == "c"
    with pytest.raises(ValueError, match="val_objective"):
        pick_best(rs[:2], "val_objective", "max")


def test_ties_follow_the_reported_trial_id_not_the_directory_name():
    a = SimpleNamespace(path="/x/tune/t/zzz", metrics={"val_objective": 0.5, "trial_id": "f31e9_00000"},
                        error=None, config={"params": {"name": "a"}})
    b = SimpleNamespace(path="/x/tune/t/aaa", metrics={"val_objective": 0.5, "trial_id": "f31e9_00001"},
                        error=None, config={"params": {"name": "b"}})
    assert pick_best([b, a], "val_objective", "max").config["params"]["name"] == "a"


def test_the_space_seed_draws_the_same_trials():
    """The sweep's search draws its trials from the space's seed: the same seed, the same trials."""
    from ray.tune import register_trainable

    from pipeline.sweep import search_for
    from pipeline.tune_space import load_space
    from tests.test_tune_spaces import ROOT

    register_trainable("seed_probe", lambda config: None)
    space = load_space(ROOT / "tune_spaces" / "embedded.yaml")

    def draws(seed):
        space.seed = seed
        gen = search_for(space)
        gen.add_configurations({"probe": {"run": "seed_probe", "num_samples": space.num_samples,
                                          "config": {k: d.to_tune() for k, d in space.space.items()}}})
        out = []
        while (t := gen.next_trial()) is not None:
            out.append(tuple(sorted(t.config.items())))
        return out

    assert len(draws(0)) == space.num_samples
    assert draws(0) == draws(0) and draws(0) != draws(1)


def test_the_chosen_config_keeps_the_setting_and_the_values_but_not_the_trial_scale(tmp_path):
    from pipeline.config import TrainJobConfig
    from pipeline.config_loader import load
    from pipeline.sweep import _best_yaml
    from pipeline.tune_space import TuneSpace, trial_overrides

    space = TuneSpace(base_config=str(ROOT / "jobs/configs/embedded.yaml"), target_k=128,
                      setting={"method.config.k_max": 256, "train.warm_start.teacher_k": 192},
                      overrides={"train.max_steps": 7, "validate.every": 10})
    assert "method.config.k_max=256" in trial_overrides(space, {}) and "train.max_steps=7" in trial_overrides(space, {})
    _best_yaml(space, {"method.config.lambda_": 0.05}, tmp_path / "best.yaml")
    best = load(TrainJobConfig, tmp_path / "best.yaml")
    assert best.method.config["k_max"] == 256 and best.train.warm_start.teacher_k == 192
    assert best.method.config["lambda_"] == 0.05 and best.validate.target_k == 128
    assert best.train.max_steps == load(TrainJobConfig, ROOT / "jobs/configs/embedded.yaml").train.max_steps


def test_the_search_starts_no_more_trials_than_the_derived_concurrency():
    """Tune ignores TuneConfig.max_concurrent_trials beside a BasicVariantGenerator; the generator holds the limit."""
    from ray.tune import register_trainable

    from pipeline.sweep import search_for
    from pipeline.tune_space import load_space
    from tests.test_tune_spaces import ROOT

    register_trainable("limit_probe", lambda config: None)
    space = load_space(ROOT / "tune_spaces" / "embedded.yaml")
    gen = search_for(space, max_concurrent=1)
    gen.add_configurations({"probe": {"run": "limit_probe", "num_samples": space.num_samples,
                                      "config": {k: d.to_tune() for k, d in space.space.items()}}})
    first = gen.next_trial()
    assert first is not None and gen.next_trial() is None  # the first is live: no second trial yet
    gen.on_trial_complete(first.trial_id, result={})
    assert gen.next_trial() is not None
