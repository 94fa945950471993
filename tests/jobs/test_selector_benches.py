"""The selector diagnostics end to end (bench_gate_gradient, bench_answer_nll, bench_gradient_signal): the committed
backbone, a fresh StepPrune checkpoint, two SynthVQA images."""

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


def test_gradient_signal_bench_says_where_the_saliency_top_k_lies(synthvqa_test_folder, capsys, one_thread):
    import re

    import bench_gradient_signal

    bench_gradient_signal.main(["--folder", str(synthvqa_test_folder), "--items", "6", "--batch-size", "3",
                                "--threads", "1", "--backbone", str(BACKBONE), "--budgets", "4,16",
                                "--g0", "0.5", "--gates", "attention"])
    out = capsys.readouterr().out
    rows = re.findall(r"K=(\d+) +attention g0=0.5 +evidence ([\d.]+) % +distractors ([\d.]+) % +recall ([\d.]+) %",
                      out)
    assert [int(r[0]) for r in rows] == [4, 16]
    for _, on, dis, rec in rows:
        assert 0 <= float(on) + float(dis) <= 100 and 0 <= float(rec) <= 100
    # the committed backbone's answer gradient points at the evidence far above chance (K of 576 patches)
    assert float(rows[1][3]) > 4 * 100 * 16 / 576
    assert "AUC of the saliency" in out and "top-K saliency (attention, g0=0.5)" in out
