"""The method base: per-backbone-family position defaults and their resolution."""

import pytest

import stepprune
from stepprune.methods.base import family_default


def test_explicit_positions_win_and_controls_keep_original():
    assert stepprune.build_method("random", budget=3).position_mode_for("qwen2_5_vl") == "original"
    m = stepprune.build_method("visionzip", budget=64, positions="original")
    assert m.position_mode == "original" and m.position_mode_for("llava") == "original"


def test_none_resolves_per_family_and_unknown_family_is_a_clear_error():
    m = stepprune.build_method("visionzip", budget=64)
    assert m.position_mode is None
    assert m.position_mode_for("llava") == "contiguous"
    with pytest.raises(ValueError, match="visionzip: positions: no default for backbone family 'x'"):
        m.position_mode_for("x")
    assert family_default(3, {}, "x", "knob") == 3


def test_invalid_positions_are_rejected():
    with pytest.raises(ValueError, match="positions must be 'original', 'contiguous' or None"):
        stepprune.build_method("random", budget=3, positions="shifted")
