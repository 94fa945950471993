"""The results report is assembled from MLflow runs: tables, Fig. 4, the targets and the provenance."""

import json

import pytest

from pipeline.report import build, retention_without_low_columns, spearman
from pipeline.report_config import OperatingPoint, ReportConfig
from pipeline.tracking import MlflowTracker, log_provenance


def test_spearman_matches_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)  # ties: average ranks
    assert spearman([1, 1, 1], [1, 2, 3]) != spearman([1, 1, 1], [1, 2, 3])  # NaN for a constant side


def test_report_from_runs(tmp_path, monkeypatch):
    from stepprune.benchmarks import synthvqa
    from stepprune.data.synthvqa import generate_synthvqa

    generate_synthvqa(tmp_path / "svq", seed=1, n_train_images=0, n_val_images=0, n_test_images=6,
                      llava_splits=(), benchmark_splits=())
    items = synthvqa.load(tmp_path / "svq" / "native" / "test")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr("sys.argv", ["jobs/eval_matrix.py", "--config", "m.yaml"])
    parent = MlflowTracker(uri, "stepprune", run_name="synthvqa_table1")
    rows = ("backbone,method,budget,synthvqa:existence,synthvqa:existence ratio%,avg_retention%,token_recall,kept_mean\n"
            "tiny,vanilla,all,80,100.0,100.0,1.0,576\n"
            "tiny,random,64,60,75.0,75.0,0.1,64\n"
            "tiny,StepPrune (K~64),all,76,95.0,95.0,0.6,63.2\n")
    parent.log_text(rows, "tables/table1.csv")
    parent.log_text("| method | ... |\n", "tables/table1.md")
    child = MlflowTracker(uri, "stepprune", run_name="tiny/StepPrune (K~64)@all/synthvqa", parent_run_id=parent.run_id)
    # K grows with scene complexity: a perfect rank correlation by construction
    preds = [{"qid": it.qid, "kept": 10 + 5 * (it.meta["n_objects"] + it.meta["n_texts"]), "score": 1.0}
             for it in items]
    child.log_text("\n".join(json.dumps(p) for p in preds) + "\n", "cell/predictions.jsonl")
    child.close()
    log_provenance(parent, 90.0)
    parent.close()
    sweep = MlflowTracker(uri, "stepprune", run_name="synthvqa_k64")
    sweep.log_params({"setting.method.config.k_max": 128, "target_k": 64})
    sweep.log_dict({"best_params": {"method.config.lambda_": 0.05}}, "best_params.json")
    sweep.log_text("| trial | lambda | val_objective |\n", "trials.md")
    sweep.set_tags({"command": "jobs/sweep.py", "code_version": "a" * 40 + "+dirty"})  # run from a modified tree
    sweep.close()
    train = MlflowTracker(uri, "stepprune", run_name="stepprune-k64")
    train.log_metrics({"step": 40, "lm_loss": 2.5, "K_mean": 60.0, "heldout.stepprune.accuracy": 0.52,
                       "heldout.stepprune.mean_kept": 63.4, "heldout.random.accuracy": 0.47,
                       "heldout.random.mean_kept": 63, "heldout.vanilla.accuracy": 0.66})
    train.close()
    cfg = ReportConfig(tracking_uri=uri, output=str(tmp_path / "docs" / "r.md"), figures=str(tmp_path / "docs" / "f"),
                       operating_points=[OperatingPoint(64, "StepPrune (K~64)", sweep_run="synthvqa_k64",
                                                        train_run="stepprune-k64")], table4_run=None,
                       test_folder=str(tmp_path / "svq" / "native" / "test"))
    text = build(cfg)
    assert ('Sweep `synthvqa_k64`, setting `{"method.config.k_max": "128"}`; chosen values: '
            '`{"method.config.lambda_": 0.05}`') in text
    assert ("Training run `stepprune-k64`: 40 steps, final LM loss 2.500, training mean K 60.0. Held-out: 52.0 % at "
            "mean K 63.4, random 47.0 % at 63, vanilla 66.0 %.") in text
    assert "| `synthvqa_k64` | `jobs/sweep.py` | `aaaaaaaaaaaa+dirty` |" in text
    assert "Avg. retention at 64: StepPrune 95.0% (mean K 63.2) vs best other random 75.0% — **met**" in text
    assert "Retention at 64 ≥ 94.6%: 95.0% — **met**" in text
    assert "Spearman(K, scene complexity) ≥ 0.5: 1.000 — **met**" in text
    assert "| `synthvqa_table1` | `jobs/eval_matrix.py --config m.yaml` |" in text and "| 1.5 |" in text
    assert (tmp_path / "docs" / "f" / "fig4_k_histogram.png").stat().st_size > 1000
    assert "![K vs complexity](f/fig4_k_vs_complexity.png)" in text


def test_the_sensitivity_check_drops_the_columns_where_vanilla_scores_low(tmp_path):
    import csv
    import io

    text = ("backbone,method,budget,a,b,a ratio%,b ratio%,avg_retention%,token_recall,kept_mean\n"
            "tiny,vanilla,all,0.8,0.2,100.0,100.0,100.0,1.0,576\n"
            "tiny,random,44,0.6,0.1,75.0,50.0,62.5,0.1,44\n"
            "tiny,StepPrune,all,0.56,0.3,70.0,150.0,110.0,0.6,43\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    dropped, alt = retention_without_low_columns(rows, 0.3)
    assert dropped == ["b"]
    # the headline Avg. puts StepPrune ahead only through b's 150 % (0.3 of 0.2)
    assert alt == {"vanilla": 100.0, "random @ 44": 75.0, "StepPrune": 70.0}
    assert retention_without_low_columns(rows, 0.1) == ([], {"vanilla": 100.0, "random @ 44": 62.5,
                                                              "StepPrune": 110.0})


def test_a_missed_target_says_what_was_tried_on_validation(tmp_path, monkeypatch):
    from stepprune.data.synthvqa import generate_synthvqa

    generate_synthvqa(tmp_path / "svq", seed=1, n_train_images=0, n_val_images=0, n_test_images=2,
                      llava_splits=(), benchmark_splits=())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr("sys.argv", ["jobs/eval_matrix.py"])
    parent = MlflowTracker(uri, "stepprune", run_name="synthvqa_table1")
    parent.log_text("backbone,method,budget,a,a ratio%,avg_retention%,token_recall,kept_mean\n"
                    "tiny,vanilla,all,80,100.0,100.0,1.0,576\n"
                    "tiny,random,64,60,75.0,75.0,0.1,64\n"
                    "tiny,dart,64,66,82.5,82.5,0.2,64\n"
                    "tiny,StepPrune k64,all,56,70.0,70.0,0.6,71.0\n", "tables/table1.csv")
    parent.log_text("| method | ... |\n", "tables/table1.md")
    parent.close()
    sweep = MlflowTracker(uri, "stepprune", run_name="synthvqa_k64")
    sweep.log_dict({"best_params": {"optim.lr": 0.001}}, "best_params.json")
    sweep.log_text("| trial |\n", "trials.md")
    for acc, k in ((0.5375, 69.9), (0.55625, 73.3)):
        trial = MlflowTracker(uri, "stepprune", run_name=f"trial_{k}", parent_run_id=sweep.run_id)
        trial.log_metrics({"val_accuracy": acc, "val_K_mean": k})
        trial.close()
    failed = MlflowTracker(uri, "stepprune", run_name="trial_err", parent_run_id=sweep.run_id)  # reported nothing
    failed.close()
    sweep.close()
    train = MlflowTracker(uri, "stepprune", run_name="stepprune-k64")
    train.log_metrics({"heldout.stepprune.accuracy": 0.507, "heldout.stepprune.mean_kept": 75.0,
                       "heldout.random.accuracy": 0.498, "heldout.random.mean_kept": 75})
    train.close()
    cfg = ReportConfig(tracking_uri=uri, output=str(tmp_path / "docs" / "r.md"), figures=str(tmp_path / "docs" / "f"),
                       operating_points=[OperatingPoint(64, "StepPrune k64", sweep_run="synthvqa_k64",
                                                        train_run="stepprune-k64")], table4_run=None,
                       test_folder=str(tmp_path / "svq" / "native" / "test"), adaptive_label="none",
                       further_reading=str(tmp_path / "docs" / "notes.md"))
    val = MlflowTracker(uri, "stepprune", run_name="synthvqa_table4_val")
    val.log_text("| method | causal-on-val |\n", "tables/table1.md")
    val.close()
    cfg.validation_runs = ["synthvqa_table4_val"]
    # a candidate the validation split did not choose: shown, not judged
    cfg.operating_points.append(OperatingPoint(64, "StepPrune k64 other", train_run="stepprune-k64", reference=True))
    text = build(cfg)
    assert "### `synthvqa_table4_val`\n\n| method | causal-on-val |" in text
    assert "Avg. retention at 64: StepPrune 70.0% (mean K 71.0) vs best other dart 82.5% — **not met**" in text
    assert ("  - tried on the validation split only: sweep `synthvqa_k64`, 2 trials at mean K 69.9-73.3 with "
            "accuracy 53.8-55.6 %; the chosen setting trained (`stepprune-k64`): 50.7 % against random's 49.8 % at "
            "mean K 75.0 (+0.9 points).") in text
    assert ("the test split's Avg. retention puts StepPrune 5.0 points behind random at 64 (75.0%), where "
            "validation accuracy had it 0.9 points ahead") in text
    assert "[notes.md](notes.md)" in text
    assert "### K ≈ 64: `StepPrune k64 other` (not chosen on the validation split; shown for comparison)" in text
    assert text.count("- Avg. retention at 64") == 1
    # the candidate shares the training run, so the leads tie: the chosen one is still the largest
    assert ("At 64 the validation split chose `StepPrune k64`: its held-out lead over random at the same mean K is "
            "+0.9 points, against `StepPrune k64 other` (+0.9).\n") in text
    other = MlflowTracker(uri, "stepprune", run_name="stepprune-k64-other")
    other.log_metrics({"heldout.stepprune.accuracy": 0.6, "heldout.stepprune.mean_kept": 70.0,
                       "heldout.random.accuracy": 0.5, "heldout.random.mean_kept": 70})
    other.close()
    cfg.operating_points[-1].train_run = "stepprune-k64-other"
    assert ("against `StepPrune k64 other` (+10.0). **The configured choice does not have the largest lead.**"
            in build(cfg))
    # one pass reads each run once: the choice line and the missed target's trace share their lookups
    from collections import Counter

    from mlflow.tracking import MlflowClient

    searched, search = Counter(), MlflowClient.search_runs

    def counting(self, experiment_ids, filter_string="", *args, **kwargs):
        searched[filter_string] += 1
        return search(self, experiment_ids, filter_string, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_runs", counting)
    build(cfg)
    assert searched and max(searched.values()) == 1, searched
