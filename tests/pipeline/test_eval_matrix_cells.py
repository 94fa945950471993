"""The matrix's cells: one per backbone x method x budget x benchmark, and no two entries writing the same cell."""

import pytest

from pipeline.config_loader import from_dict
from pipeline.eval_config import MatrixConfig
from pipeline.eval_matrix import expand


def _matrix(methods):
    return from_dict(MatrixConfig, {"backbones": [{"name": "b", "path": "x"}], "methods": methods,
                                    "budgets": [128, 64], "benchmarks": [{"name": "pope", "folder": "p"}]})


def test_one_label_trained_per_budget_gets_one_cell_per_budget():
    cells = expand(_matrix([{"name": "vanilla"},
                            {"name": "visionselector", "checkpoint": "a", "label": "VS", "budgets": [128]},
                            {"name": "visionselector", "checkpoint": "c", "label": "VS", "budgets": [64]}]))
    assert [str(c.path) for c in cells] == ["b/vanilla@all/pope", "b/VS@128/pope", "b/VS@64/pope"]
    assert [c.method.checkpoint for c in cells[1:]] == ["a", "c"]


def test_two_entries_writing_one_cell_are_refused():
    with pytest.raises(ValueError, match=r"two methods write cell b/VS@64/pope"):
        expand(_matrix([{"name": "visionselector", "checkpoint": "a", "label": "VS"},
                        {"name": "visionselector", "checkpoint": "c", "label": "VS", "budgets": [64]}]))
    with pytest.raises(ValueError, match=r"two methods write cell b/stepprune@all/pope"):
        expand(_matrix([{"name": "stepprune", "checkpoint": "a"}, {"name": "stepprune", "checkpoint": "c"}]))
