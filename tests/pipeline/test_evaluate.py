"""Evaluation: one cell in-process, and the Ray matrix with resumable cells, a crashed actor and the tables."""

import json

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config_loader import load
from pipeline.eval_config import EvalJobConfig, MatrixConfig
from stepprune.benchmarks.fixtures import write_all

pytestmark = pytest.mark.ray


def test_evaluate_one_cell_writes_predictions_summary_and_mlflow(tmp_path, tiny_llava_dir):
    from pipeline.evaluate_job import run

    folders = write_all(tmp_path / "bench")
    cfg = load(EvalJobConfig, None, [f"backbone.path={tiny_llava_dir}", "method.name=random", "budget=64",
                                     "benchmark.name=pope", f"benchmark.folder={folders['pope']}",
                                     f"output={tmp_path / 'out'}", "batch_size=4"])
    summary = run(cfg)
    out = tmp_path / "out" / tiny_llava_dir.name / "random@64" / "pope"
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == summary["items"] == 12
    assert all(r["kept"] == 64 and len(r["kept_index"]) == 64 and r["latency_ms"] > 0 for r in rows)
    assert {"qid", "prompt", "answer", "kept", "visual_per_layer", "score"} <= set(rows[0])
    assert (out / "predictions.parquet").exists()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["headline_key"] == "f1_mean" and saved["kept_mean"] == 64
    run_ = MlflowClient(f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}").get_run(summary["mlflow_run_id"])
    assert run_.data.params["method.name"] == "random" and "kept_mean" in run_.data.metrics


def test_matrix_fans_out_resumes_and_survives_an_actor_crash(ray_session, tmp_path, tiny_llava_dir):
    from pipeline.eval_matrix import run

    folders = write_all(tmp_path / "bench")
    marker = tmp_path / "crashed"
    overrides = [
        f"output={tmp_path / 'matrix'}", "batch_size=4", "actors.num_actors=2", "actors.num_cpus=0.5",
        f"actors.fail_once_marker={marker}",
    ]
    yaml_text = f"""
backbones: [{{name: tiny, path: {tiny_llava_dir}}}]
methods: [{{name: vanilla}}, {{name: random, budgets: [64, 16]}}]
benchmarks: [{{name: pope, folder: {folders['pope']}}}, {{name: gqa, folder: {folders['gqa']}}}]
"""
    (tmp_path / "m.yaml").write_text(yaml_text)
    cfg = load(MatrixConfig, tmp_path / "m.yaml", overrides)
    first = run(cfg)
    assert marker.exists() and not first["failed"]  # an actor died once; its cell was retried and finished
    assert len(first["summaries"]) == 6
    table = first["tables"]["table1.md"]
    assert "| vanilla |" in table and "random @ 64" in table and "random @ 16" in table
    csv_rows = first["tables"]["table1.csv"].splitlines()
    vanilla = next(r for r in csv_rows if ",vanilla," in r)
    assert ",100.0," in vanilla  # vanilla is 100 % of itself
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "matrix").rglob("summary.json")}
    second = run(cfg)  # everything finished: nothing is recomputed
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "matrix").rglob("summary.json")} == stamp
    assert second["tables"]["table1.csv"] == first["tables"]["table1.csv"]
    client = MlflowClient(f"sqlite:///{(tmp_path / 'matrix' / 'mlflow.db').resolve()}")
    children = client.search_runs([client.get_run(first["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{first['mlflow_run_id']}'")
    assert len(children) == 6


def test_summary_reports_what_is_left_cached_at_the_end():
    from pipeline.evaluate_job import summarize
    from stepprune.benchmarks import BenchmarkItem, get_benchmark
    from stepprune.evaluation import Prediction

    bench = get_benchmark("synthvqa_describe")
    items = [BenchmarkItem(str(i), "p", "ref", meta={"family": "describe", "subfamily": "detail", "evidence": [1],
                                                    "mentions": ["large red star"]}) for i in range(2)]
    preds = [Prediction(str(i), "p", "a large red star", 576, [], [], [576] * 4, 1.0, [576, 576, c, c])
             for i, c in enumerate((288, 144))]
    summary = summarize(bench, items, preds, "llava")
    assert summary["headline"] == 1.0 and summary["kept_per_layer_mean"] == [576] * 4
    assert summary["cached_per_layer_mean"] == [576, 576, 216, 216]
