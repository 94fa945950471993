"""The measurement helpers: the generated split is checked against its config; the table lists every family."""

import json

import pytest

from pipeline.backbone_eval import ensure_split, family_table, headline
from pipeline.pretrain_config import BackboneEvalSpec


def _agg(acc):
    fams = {"existence": 10, "attribute": 8, "counting": 6, "describe": 1}
    out = {"overall": acc, "n/overall": 24.0}
    for f, n in fams.items():
        out[f] = acc / 2 if f == "counting" else acc
        out[f"n/{f}"] = float(n)
    return out


def test_family_table_and_headline():
    report = {"results": {"vanilla": {"aggregate": _agg(0.9), "seconds": 3.0},
                          "blind": {"aggregate": _agg(0.3), "seconds": 1.0}}}
    table = family_table(report)
    lines = table.splitlines()
    assert lines[0] == "| family | questions | vanilla | blind |"
    assert "| counting | 6 | 45.0 | 15.0 |" in lines
    assert lines[-1] == "| **overall** | 24 | **90.0** | **30.0** |"
    assert any(line.startswith("| describe (mention recall") for line in lines)
    assert "relation" not in table  # families absent from the split are not invented
    h = headline(report)
    assert h["vanilla.overall"] == 0.9 and h["blind.counting"] == 0.15 and h["blind.seconds"] == 1.0


def test_split_is_generated_once_and_checked(tmp_path):
    spec = BackboneEvalSpec(folder=str(tmp_path / "d"), n_images=2)
    split = ensure_split(spec)
    rows = [json.loads(x) for x in (split / "questions.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"test"} and len({r["image_id"] for r in rows}) == 2
    assert ensure_split(spec) == split
    with pytest.raises(ValueError, match="seed 0 and 2 test images"):
        ensure_split(BackboneEvalSpec(folder=str(tmp_path / "d"), n_images=3))
