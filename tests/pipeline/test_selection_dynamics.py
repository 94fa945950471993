"""The selection-dynamics bench: the job's training step in one process, evidence recall measured as it trains."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import SPEC_SINGLE_STAGE, TrainJobConfig
from pipeline.config_loader import load
from pipeline.selection_dynamics import evidence_recall, run
from stepprune.benchmarks import synthvqa

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(synthvqa_test_folder):
    return synthvqa_test_folder


def _cfg(folder, *extra):
    return load(TrainJobConfig, str(ROOT / "jobs" / "configs" / "embedded.yaml"), SPEC_SINGLE_STAGE + [
        "scaling.num_workers=1", "train.global_batch_size=2", "train.micro_batch_size=2", "train.max_steps=2",
        f"eval.folder={folder}", "method.config.k_max=16", "deepspeed.enabled=false", *extra])


def test_the_bench_trains_the_method_and_measures_recall_against_chance(folder, one_thread):
    items = synthvqa.load(folder, limit=4)
    cfg = _cfg(folder)
    first = list(run(cfg, items, steps=2, every=1, seed=0, batch_size=2))
    assert [r["step"] for r in first] == [0, 1, 2]
    for r in first:
        assert 0.0 <= r["recall"] <= 1.0 and 1 <= r["K"] <= 16 and r["chance"] == pytest.approx(r["K"] / 576)
    assert all(torch.isfinite(torch.tensor(r["lm_loss"])) for r in first[1:])
    assert all(0.0 <= r["g_selected"] <= 1.0 and 0.0 <= r["g_rest"] <= 1.0 for r in first[1:])
    # the same seed: the same initialisation, so the same selection before training
    again = list(run(cfg, items, steps=1, every=1, seed=0, batch_size=2))
    assert again[0] == first[0]


def test_recall_is_full_when_nothing_is_pruned(folder, one_thread):
    import stepprune

    items = synthvqa.load(folder, limit=3)
    adapter = stepprune.load_backbone(ROOT / "checkpoints" / "synthvqa-llava-tiny")
    vlm = stepprune.PrunedVLM(adapter, stepprune.build_method("vanilla"))
    prompt = adapter.prepare([it.load_image() for it in items], [it.prompt for it in items])
    got = evidence_recall(vlm, [prompt], items)
    assert got == {"recall": 1.0, "chance": 1.0, "K": 576.0}
    blind = evidence_recall(stepprune.PrunedVLM(adapter, stepprune.build_method("random", budget=1)), [prompt], items)
    assert blind["K"] == 1.0 and blind["recall"] < 1.0


def test_the_job_runs_several_seeds_with_deepspeed_in_one_process(folder):
    """DeepSpeed keeps its process groups across engines, so the job builds one group for all seeds (a fresh
    process here: other tests tear their group down)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "bench_selection_dynamics.py"), "--steps", "1", "--every", "1",
         "--seeds", "0,1", "--items", "2", "train.global_batch_size=2", "train.micro_batch_size=2",
         "train.threads_per_worker=1", f"eval.folder={folder}", "method.config.k_max=8", "deepspeed.enabled=true"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [(r["seed"], r["step"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
