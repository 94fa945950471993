"""The training job's printed summary: held-out accuracy and, when measured, the train/inference gap table."""

from pipeline.train_job import TrainSummary
from stepprune.train_gap import CONDITIONS


def _summary(gap):
    heldout = [{"method": "stepprune (trained)", "accuracy": 0.4, "mean_kept": 15.4},
               {"method": "vanilla", "accuracy": 0.47, "mean_kept": 576.0}]
    return TrainSummary("embedded", "abc", "sqlite:///runs/mlflow.db", 100, {"loss": 0.5, "K_mean": 16.0},
                        "runs/embedded/final/selector", heldout, 600.0, gap)


def test_the_summary_prints_the_gap_table_when_measured():
    gap = {"all": {"n": 120.0, "kept": 15.4, **{c: float(i) for i, c in enumerate(CONDITIONS)}},
           "counting": {"n": 20.0, "kept": 14.0, **{c: 1.0 for c in CONDITIONS}}}
    text = _summary(gap).render()
    lines = text.splitlines()
    assert next(x for x in lines if "stepprune (trained)" in x).split()[-4:] == ["acc=0.4000", "mean", "kept",
                                                                               "tokens=15.4"]
    start = next(i for i, line in enumerate(lines) if line.startswith("train/inference gap"))
    assert lines[start + 1].split() == ["family", "n", "kept", *CONDITIONS]
    assert lines[start + 2].split() == ["all", "120", "15.4", "0.000", "1.000", "2.000", "3.000", "4.000", "5.000"]
    assert lines[start + 3].split()[:3] == ["counting", "20", "14.0"]
    assert lines[-1].startswith("MLflow run abc")


def test_no_gap_no_table():
    assert "train/inference gap" not in _summary(None).render()


def test_the_summary_prints_evidence_recall_where_measured():
    s = _summary(None)
    s.heldout = [{**s.heldout[0], "token_recall": 0.125}, {**s.heldout[1], "token_recall": None}]
    lines = s.render().splitlines()
    assert next(x for x in lines if "stepprune (trained)" in x).endswith("evidence recall=12.5%")
    assert "recall" not in next(x for x in lines if x.strip().startswith("vanilla"))


def test_the_summary_prints_the_distractor_share_where_measured():
    s = _summary(None)
    s.heldout = [{**s.heldout[0], "token_recall": 0.125, "distractor_share": 0.3},
                 {**s.heldout[1], "token_recall": 1.0}]
    lines = s.render().splitlines()
    assert next(x for x in lines if "stepprune (trained)" in x).endswith("evidence recall=12.5%  distractors=30.0%")
    assert next(x for x in lines if x.strip().startswith("vanilla")).endswith("evidence recall=100.0%")
