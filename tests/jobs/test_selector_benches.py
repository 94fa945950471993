"""The selector diagnostics end to end (bench_gate_gradient, bench_answer_nll): the committed backbone, a fresh
StepPrune checkpoint, two SynthVQA images."""

import sys
from pathlib import Path

import pytest
import torch

import stepprune
from stepprune.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
BACKBONE = ROOT / "checkpoints" / "synthvqa-llava-tiny"


def test_prints_the_gradient_of_every_token_class(synthvqa_test_folder, tmp_path, capsys, one_thread):
    import bench_gate_gradient

    adapter = stepprune.load_backbone(BACKBONE)
    torch.manual_seed(0)
    method = stepprune.build_method("stepprune", {"d": 32, "heads": 4, "k_max": 8, "total_steps": 100,
                                                  "gate": "attention", "gate_forward": "hard"}).bind(adapter)
    ckpt = save_checkpoint(method, tmp_path / "selector", adapter=adapter)
    bench_gate_gradient.main(["--folder", str(synthvqa_test_folder), "--items", "4", "--batch-size", "2",
                              "--threads", "1", "--backbone", str(BACKBONE), "--selectors", str(ckpt)])
    out = capsys.readouterr().out
    assert "top 1 % of tokens hold" in out
    assert "kept evidence" in out or "left-out evidence" in out
    assert "left-out background" in out


def test_refuses_a_folder_without_questions(tmp_path):
    import bench_gate_gradient

    with pytest.raises(SystemExit) as e:
        bench_gate_gradient.main(["--folder", str(tmp_path), "--selectors", "x"])
    assert e.value.code == 2


def test_answer_nll_bench_prints_the_gap_table(synthvqa_test_folder, tmp_path, capsys, one_thread):
    import bench_answer_nll

    adapter = stepprune.load_backbone(BACKBONE)
    torch.manual_seed(0)
    method = stepprune.build_method("stepprune", {"d": 32, "heads": 4, "k_max": 8, "total_steps": 100}).bind(adapter)
    ckpt = save_checkpoint(method, tmp_path / "selector", adapter=adapter)
    bench_answer_nll.main(["--folder", str(synthvqa_test_folder), "--items", "4", "--threads", "1",
                           "--backbone", str(BACKBONE), "--selectors", str(ckpt)])
    out = capsys.readouterr().out
    assert "selection" in out and "train_path" in out and "random" in out
    assert out.count("\nall ") == 1
