"""The efficiency job end to end: Table 3's FLOPs at the real LLaVA-1.5-7B config on the meta device, and measured
latency on the tiny backbone, with the tables on disk and in MLflow."""

import csv
import io
import json

import pytest

from pipeline.config_loader import ConfigError, load
from pipeline.efficiency import expand
from pipeline.efficiency_config import EfficiencyJobConfig

FLOPS_CONFIG = "jobs/configs/efficiency_llava15_7b_flops.yaml"


def _runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("stepprune")
    return client.search_runs([exp.experiment_id])


def test_flops_table_at_the_real_llava_config(tmp_path, capsys):
    from jobs.efficiency import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    main(["--config", FLOPS_CONFIG, f"output={tmp_path}", f"tracking.uri={uri}"])
    printed = capsys.readouterr().out
    assert "[PASS] stepprune@64: method FLOPs / pruned-prefill FLOPs" in printed
    assert "[PASS] stepprune@64: total" in printed
    folder = tmp_path / "llava15_7b_flops"
    recs = {r["key"]: r for r in csv.DictReader(io.StringIO((folder / "table.csv").read_text()))}
    assert len(recs) == 2 + 13 * 3  # vanilla and DyRate-style (unbudgeted) + 13 methods x 3 budgets
    tf = {k: float(r["tflops"]) for k, r in recs.items()}
    assert tf["vanilla@all"] == pytest.approx(8.856, abs=0.001)  # 0.382 CLIP + 0.024 projector + 8.450 prefill
    assert tf["stepprune@64"] == pytest.approx(2.043, abs=0.001) and tf["stepprune@64"] <= 2.1
    assert float(recs["stepprune@64"]["method_share"]) < 0.05
    for budget in (192, 128, 64):  # fewer tokens, fewer FLOPs; every pruned row well under vanilla
        assert all(tf[f"{m}@{budget}"] < tf["vanilla@all"] / 2 for m in ("fastv", "pdrop", "visionzip", "stepprune"))
    assert tf["fastv@64"] < tf["fastv@128"] < tf["fastv@192"]
    assert recs["fastv@64"]["tokens_per_layer"] == "96.0"  # 576 in layers 0-1, 64 in the 30 others
    assert json.loads((folder / "rows.json").read_text())["setting"]["flops"]["backbone"] == "llava15_7b"
    runs = _runs(uri)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and len(runs) == 1 + len(recs)
    assert parent[0].data.metrics["wall_seconds"] > 0  # the report's "wall (min)" column reads it
    child = next(r for r in runs if r.info.run_name == "stepprune@64")
    assert child.data.metrics["tflops"] == pytest.approx(tf["stepprune@64"])


def test_latency_on_the_tiny_backbone_with_flops(tmp_path):
    from pipeline.efficiency import run

    cfg = load(EfficiencyJobConfig, "jobs/configs/efficiency_tiny_cpu.yaml", [
        f"output={tmp_path}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "budgets=[64]",
        "methods=[{name: vanilla}, {name: fastv}, {name: visionzip}, {name: stepprune, config: {d: 32, heads: 4}}]",
        "latency.batches=[1, 2]", "latency.repeats=2", "latency.warmup=1", "flops.enabled=true",
        "flops.backbone=llava15_7b"])
    out = run(cfg)
    recs = {r["key"]: r for r in out["records"]}
    assert list(recs) == ["vanilla@all", "fastv@64", "visionzip@64", "stepprune@64"]
    for r in recs.values():
        for b in (1, 2):
            assert r[f"ttft_b{b}_ms"] > 0 and r[f"speedup_b{b}"] > 0
            assert r[f"ttft_b{b}_p25_ms"] <= r[f"ttft_b{b}_ms"] <= r[f"ttft_b{b}_p75_ms"]
    assert recs["vanilla@all"]["speedup_b1"] == 1.0
    assert recs["stepprune@64"]["visual_tokens"] == 64 and "tflops" in recs["stepprune@64"]
    assert "TTFT b=2 (ms) [IQR]" in (tmp_path / "tiny_cpu_latency" / "table.md").read_text()
    assert any(line.startswith("[PASS] stepprune@64: total") for line in out["checks"])


def test_rows_budgets_and_config_errors():
    cfg = load(EfficiencyJobConfig, FLOPS_CONFIG, ["budgets=[64]", "vanilla=vanilla"])
    keys = [r.key for r in expand(cfg)]
    assert keys[0] == "vanilla@all" and "stepprune@64" in keys and "dyrate@all" in keys and len(keys) == 15
    with pytest.raises(ConfigError, match="enable flops, latency or both"):
        load(EfficiencyJobConfig, FLOPS_CONFIG, ["flops.enabled=false"])
    with pytest.raises(ConfigError, match="unknown key"):
        load(EfficiencyJobConfig, FLOPS_CONFIG, ["methods=[{name: fastv, config: {nope: 1}}]"])
