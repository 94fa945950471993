"""Config of ``jobs/report.py``: which MLflow runs make up the results report, and where it goes."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class OperatingPoint:
    """One budget row group: the StepPrune row that stands for it in the tables (trained at mean K ~ budget)."""

    budget: int
    stepprune_label: str
    sweep_run: str | None = None  # the sweep's parent MLflow run name
    train_run: str | None = None  # the training run's name
    # a candidate the validation split did not choose at this budget: its sweep and held-out check are shown beside
    # the chosen one, and the targets skip it
    reference: bool = False


@dataclasses.dataclass
class ReportConfig:
    """Run names are looked up in ``experiment`` of the store at ``tracking_uri`` (the latest finished run of each
    name is used).

    Attributes:
        table1_run: the evaluation-matrix parent run of Table 1 (every method x budget on the test split).
        table4_run: the evaluation-matrix parent run of the ablations (Table 4, at 64).
        ablation_labels: row labels of Table 4 in order, with the full model first.
        efficiency_runs: efficiency-job parent runs whose tables form Table 3.
        other_runs: further runs whose commands belong in the report (e.g. VisionSelector / DyRate training).
        test_folder: the SynthVQA test split the matrix read (for scene complexity per question).
        adaptive_label: the StepPrune row whose K distribution makes Fig. 4.
        validation_runs: evaluation-matrix parent runs on the validation split, shown as diagnostics (choices are
            made there; e.g. Table 4a's encoders against random at their own K).
        further_reading: a hand-written account of what else was tried (on validation only), linked under the
            targets; None: no link.
        sensitivity_min_vanilla: each Avg.-retention check is repeated without the columns where vanilla's raw
            score (the column's own units: SynthVQA's are accuracies in [0, 1]) is under this (ratios to small
            scores swing with a few questions); None: no such line.
    """

    tracking_uri: str = "sqlite:///runs/paper/mlflow.db"
    experiment: str = "stepprune"
    output: str = "docs/results/synthvqa.md"
    figures: str = "docs/results/figures"
    operating_points: list[OperatingPoint] = dataclasses.field(default_factory=list)
    table1_run: str = "synthvqa_table1"
    table4_run: str | None = "synthvqa_table4"
    ablation_labels: list[str] = dataclasses.field(default_factory=list)
    efficiency_runs: list[str] = dataclasses.field(default_factory=list)
    other_runs: list[str] = dataclasses.field(default_factory=list)
    test_folder: str = "data/synthvqa/native/test"
    adaptive_label: str = "StepPrune (K~64)"
    paper_retention_at_64: float = 94.6
    spearman_target: float = 0.5
    sensitivity_min_vanilla: float | None = 0.3
    validation_runs: list[str] = dataclasses.field(default_factory=list)
    further_reading: str | None = None
