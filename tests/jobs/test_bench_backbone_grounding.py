"""bench_backbone_grounding end to end on the committed backbone and two SynthVQA test images."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
BACKBONE = ROOT / "checkpoints" / "synthvqa-llava-tiny"


def test_prints_the_evidence_mass_tables(synthvqa_test_folder, capsys, one_thread):
    import bench_backbone_grounding

    bench_backbone_grounding.main(["--folder", str(synthvqa_test_folder), "--items", "12", "--batch-size", "4",
                                   "--threads", "1", "--backbone", str(BACKBONE), "--layer", "1"])
    out = capsys.readouterr().out
    records = [json.loads(line) for line in (synthvqa_test_folder / "questions.jsonl").read_text().splitlines()][:12]
    with_evidence = [r for r in records if r["evidence"] and r["family"] != "describe"]
    assert f"{len(with_evidence)} questions with evidence of 12" in out
    first = re.search(r"^all\s+(\d+)\s+([\d.]+)\s+((?:[\d.]+\s+){4})([\d.]+)$", out, re.M)  # 4 decoder layers
    assert first, out
    assert int(first.group(1)) == len(with_evidence)
    masses = [float(v) for v in first.group(3).split()]
    distractors = float(first.group(4))
    assert all(0 <= m <= 1 for m in masses) and 0 <= masses[1] + distractors <= 1 + 1e-3
    assert "by the layer-1 evidence mass" in out and "by objects in the scene" in out
    assert out.count("\nall ") == 3
    attribute = sum(r["family"] == "attribute" for r in with_evidence)
    assert attribute > 0  # the fixture's first 12 questions ask one; the referent-group table needs it
    assert f"attribute questions ({attribute}): layer-1 attention" in out
    mass = re.search(r"^mass\s+((?:[\d.]+\s*){5})$", out, re.M)
    assert mass, out
    groups = [float(v) for v in mass.group(1).split()]
    assert all(g >= 0 for g in groups) and sum(groups) <= 1 + 1e-3


def test_refuses_a_layer_the_backbone_does_not_have(synthvqa_test_folder):
    import bench_backbone_grounding

    with pytest.raises(SystemExit) as e:
        bench_backbone_grounding.main(["--folder", str(synthvqa_test_folder), "--backbone", str(BACKBONE),
                                       "--layer", "4"])
    assert e.value.code == 2


def test_sharpen_scales_the_layers_queries(synthvqa_test_folder, capsys, one_thread):
    import bench_backbone_grounding

    args = ["--folder", str(synthvqa_test_folder), "--items", "4", "--batch-size", "4", "--threads", "1",
            "--backbone", str(BACKBONE), "--layer", "1"]
    means = []
    for extra in ([], ["--sharpen", "4"]):
        bench_backbone_grounding.main(args + extra)
        out = capsys.readouterr().out
        means.append(re.search(r"^all\s+\d+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.M).groups())
    assert "layer 1's queries x4" in out
    assert means[0][0] == means[1][0] and means[0][1] != means[1][1]  # layer 0 untouched, layer 1 changed
