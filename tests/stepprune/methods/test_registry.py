"""The registry and typed configs: unknown names and keys, and budget validation."""

import pytest

import stepprune
from stepprune.methods.registry import UnknownMethodError


def test_controls_are_registered():
    assert {"vanilla", "blind", "random", "uniform", "pool"} <= set(stepprune.METHODS)


def test_unknown_method_name_is_a_clear_error():
    with pytest.raises(UnknownMethodError, match=r"unknown method 'fastvv'; available: \["):
        stepprune.build_method("fastvv")


def test_unknown_config_key_is_a_clear_error():
    with pytest.raises(ValueError, match=r"RandomConfig: unknown key\(s\) \['budgett'\]; valid keys"):
        stepprune.build_method("random", budgett=3)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_budget_below_one_or_not_an_integer_is_rejected(bad):
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        stepprune.build_method("random", budget=bad)


def test_ratio_and_budget_are_exclusive_and_ratio_in_range():
    with pytest.raises(ValueError, match="not both"):
        stepprune.build_method("random", budget=3, ratio=0.5)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        stepprune.build_method("uniform", ratio=1.5)


def test_keep_all_controls_take_no_budget():
    with pytest.raises(ValueError, match="takes no budget"):
        stepprune.build_method("vanilla", budget=64)
