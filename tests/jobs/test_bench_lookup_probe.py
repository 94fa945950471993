"""bench_lookup_probe end to end on the committed backbone and two SynthVQA test images."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
BACKBONE = ROOT / "checkpoints" / "synthvqa-llava-tiny"


def test_prints_every_lookup_row(synthvqa_test_folder, capsys, one_thread):
    import bench_lookup_probe

    folder = str(synthvqa_test_folder)
    bench_lookup_probe.main(["--folder", folder, "--train-folder", folder, "--steps", "3", "--threads", "1",
                             "--backbone", str(BACKBONE), "--batch-size", "4"])
    out = capsys.readouterr().out
    records = [json.loads(line) for line in (synthvqa_test_folder / "questions.jsonl").read_text().splitlines()]
    attribute = sum(r["family"] == "attribute" and bool(r["evidence"]) for r in records)
    assert attribute > 0
    assert f"fitted on {attribute} attribute questions" in out and f"evidence mass on {attribute} of" in out
    for name in ("backbone's own layer 1 (head mean)", "description -> projected tokens",
                 "description -> layer-1 visual state", "answer slot -> layer-1 visual state"):
        row = re.search(rf"^{re.escape(name)}\s+([\d.]+)", out, re.M)
        assert row, (name, out)
        assert 0.0 <= float(row.group(1)) <= 1.0


def test_the_backbones_own_row_is_its_answer_slot_attention(synthvqa_test_folder, one_thread):
    import bench_lookup_probe
    import torch

    import stepprune
    from stepprune.answer_attention import answer_slot_attention
    from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPES, SIZE_NAMES

    folder = str(synthvqa_test_folder)
    recs = bench_lookup_probe._attribute_questions(folder, 100)
    adapter = stepprune.load_backbone(str(BACKBONE))
    cached = bench_lookup_probe._cache(adapter, folder, recs, 1, [*COLOR_NAMES, *SHAPES, *SIZE_NAMES], 3)
    from PIL import Image

    rec = recs[0]
    att = answer_slot_attention(adapter, adapter.prepare([Image.open(Path(folder) / rec["image"]).convert("RGB")],
                                                         [rec["prompt"]]))[0, 1]
    assert cached["own"][0] == pytest.approx(float(att[rec["evidence"]].sum()), abs=1e-5)
    assert cached["bag"][0].sum() == len(rec["named"]) and cached["evidence"][0].sum() == len(rec["evidence"])
    assert cached["v0"].shape[1:] == (576, 192) and torch.isfinite(cached["slot"]).all()


def test_refuses_a_layer_the_backbone_does_not_have(synthvqa_test_folder):
    import bench_lookup_probe

    with pytest.raises(SystemExit) as e:
        bench_lookup_probe.main(["--folder", str(synthvqa_test_folder), "--train-folder", str(synthvqa_test_folder),
                                 "--backbone", str(BACKBONE), "--layer", "4"])
    assert e.value.code == 2
