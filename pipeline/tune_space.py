"""Ray Tune search spaces as YAML (``tune_spaces/*.yaml``), validated against the training job's config.

A space names a base training config, the operating point's fixed settings (kept in the chosen config), the
reduced-scale overrides every trial runs with, one distribution per
dotted config key, the metric and mode, the scheduler, and the operating point (``target_k``) that the
validation objective pulls the mean number of kept tokens towards. Every key must name a real field of
:class:`pipeline.config.TrainJobConfig`; keys under ``method.config.`` must be fields of the method's own
config. An unknown key is an error naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

from pipeline.config import RayConfig, TrackingConfig, TrainJobConfig
from pipeline.config_loader import ConfigError, field_paths, load
from stepprune.methods import method_class


@dataclasses.dataclass
class Distribution:
    """One search dimension: ``choice`` / ``grid`` (``values``), ``uniform`` / ``loguniform`` / ``randint``
    (``low``, ``high``)."""

    type: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"{self.type} needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.type} needs low < high")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")

    def corners(self) -> list[Any]:
        """Extreme values, for validating a space without sampling."""
        if self.type in ("choice", "grid"):
            return list(self.values)
        if self.type == "randint":
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]

    def to_tune(self):
        from ray import tune

        if self.type == "choice":
            return tune.choice(self.values)
        if self.type == "grid":
            return tune.grid_search(self.values)
        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.randint(int(self.low), int(self.high))


@dataclasses.dataclass
class SchedulerConfig:
    """``asha`` (early stopping on the metric, in validation reports) or ``fifo``."""

    type: Literal["asha", "fifo"] = "asha"
    max_t: int = 10
    grace_period: int = 2
    reduction_factor: int = 2


@dataclasses.dataclass
class TuneSpace:
    """A sweep: the space, the objective and where the sweep lives.

    Attributes:
        base_config: the training YAML every trial starts from.
        setting: dotted overrides that define the operating point (e.g. the step cap): applied to every trial and
            kept in the chosen training config.
        overrides: dotted overrides applied to every trial only (the reduced scale: steps, validation cadence).
        space: dotted key -> distribution.
        target_k: the operating point (mean kept tokens) the objective pulls towards; None = accuracy only.
        k_weight: weight of the relative K distance in the objective.
        metric, mode: what the scheduler and the final choice optimise.
        num_samples: trials (per grid point).
        max_concurrent_trials: None = derived from the cluster's resources.
        seed: seeds the sampling of the space, so the same space file draws the same trials.
        name: the sweep's name; re-running with it restores the sweep.
    """

    base_config: str = "jobs/configs/embedded.yaml"
    setting: dict[str, Any] = dataclasses.field(default_factory=dict)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    space: dict[str, Distribution] = dataclasses.field(default_factory=dict)
    target_k: float | None = None
    k_weight: float = 1.0
    metric: str = "val_objective"
    mode: Literal["max", "min"] = "max"
    num_samples: int = 4
    max_concurrent_trials: int | None = None
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    seed: int = 0
    name: str = "sweep"
    storage_root: str = "runs/sweeps"
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)


# With a base config that runs the label-free warm start (``train.warm_start``), a sweep trains it once and every
# trial starts from it (:func:`pipeline.sweep.run`), which is only the same experiment when no sampled key changes
# what the warm start trains. These are the keys the warm start does not read: the LM-loss steps' optimiser,
# schedule and loop, and the method-config fields that act only on the LM-loss path (the length term and its
# ramp, the SoftTopK temperature and aggregation, the noise gate, the question-gate schedule). The warm start
# reads the architecture (which also fixes the initialisation's random stream), the backbone, the seed and its own
# section; a space that samples those must set ``train.warm_start: null`` (a warm start per trial) instead.
SHARED_WARM_START_PREFIXES = ("optim.", "validate.", "train.max_steps", "train.global_batch_size",
                              "train.micro_batch_size", "train.trainable", "train.report_every",
                              "train.checkpoint_every")
SHARED_WARM_START_METHOD_KEYS = frozenset({
    "lambda_", "lambda_delay_frac", "lambda_ramp_frac", "tau", "gamma", "score_mode", "soft_topk_solver",
    "per_sample_k", "budget_grad", "gate_forward", "gate", "kbar_momentum", "beta_start", "beta_end",
    "beta_anneal_steps", "beta_anneal_frac", "noise_scale", "noise_momentum", "gate_clamp", "denoise_at_inference",
    "k_min", "alpha_start", "alpha_warmup_frac", "total_steps", "sync_every", "loop"})


def shares_warm_start(key: str) -> bool:
    """Whether a sampled key leaves the warm start unchanged (see ``SHARED_WARM_START_PREFIXES``)."""
    if key.startswith("method.config."):
        return key[len("method.config."):] in SHARED_WARM_START_METHOD_KEYS
    return key.startswith(SHARED_WARM_START_PREFIXES)


def _check_key(key: str, method_name: str, where: str) -> None:
    prefix = "method.config."
    if key.startswith(prefix):
        cls = method_class(method_name).config_class
        name = key[len(prefix):]
        if name not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"{where}: unknown key {key!r}: {cls.__name__} has no field {name!r}")
        return
    if key not in field_paths(TrainJobConfig):
        raise ConfigError(f"{where}: unknown key {key!r}: not a field of the training job config")


def trial_overrides(space: TuneSpace, params: dict[str, Any]) -> list[str]:
    """The dotted overrides of one trial: the space's setting and reduced-scale overrides, the sampled values, the
    objective."""
    out = setting_overrides(space) + as_overrides(space.overrides) + as_overrides(params)
    if space.target_k is not None:
        out += [f"validate.target_k={space.target_k}", f"validate.k_weight={space.k_weight}"]
    return out


def setting_overrides(space: TuneSpace) -> list[str]:
    """The space's ``setting`` as dotted overrides (what the chosen training config keeps besides the values)."""
    return as_overrides(space.setting)


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{dotted key: value}`` as ``key=value`` overrides, each value in YAML (None as ``null``)."""
    return [f"{k}={_yaml(v)}" for k, v in values.items()]


def _yaml(v: Any) -> str:
    import json

    return "null" if v is None else json.dumps(v) if not isinstance(v, str) else v


def validate_space(space: TuneSpace, source: str | Path = "space") -> None:
    """Checks every key against the training config and builds a trial config at the space's corners."""
    base = load(TrainJobConfig, space.base_config)
    method = space.overrides.get("method.name", space.setting.get("method.name", base.method.name))
    for key in (*space.setting, *space.overrides, *space.space):
        _check_key(key, method, str(source))
    if space.target_k is not None and not space.target_k > 0:
        raise ConfigError(f"{source}: target_k must be > 0")
    if space.metric not in ("val_objective", "val_accuracy", "val_K_mean", "loss", "lm_loss"):
        raise ConfigError(f"{source}: metric {space.metric!r} is not reported by the training loop")
    n_corners = max((len(d.corners()) for d in space.space.values()), default=1)
    for i in range(n_corners):  # every value of every choice at least once, and both ends of each range
        params = {k: d.corners()[min(i, len(d.corners()) - 1)] for k, d in space.space.items()}
        try:
            cfg = load(TrainJobConfig, space.base_config, trial_overrides(space, params))
        except ConfigError as e:
            raise ConfigError(f"{source}: a trial config does not validate: {e}") from None
        if cfg.validate.every is None and space.metric.startswith("val_"):
            raise ConfigError(f"{source}: the metric {space.metric!r} needs validate.every in the overrides")
        if space.metric.startswith("val_") and cfg.validate.every != cfg.train.report_every:
            # Tune requires the metric in every report, and the loop reports every train.report_every steps
            raise ConfigError(f"{source}: validate.every ({cfg.validate.every}) must equal train.report_every "
                              f"({cfg.train.report_every}): every report to Tune must carry {space.metric!r}")
        if cfg.train.warm_start is not None:
            if bad := [k for k in space.space if not shares_warm_start(k)]:
                raise ConfigError(
                    f"{source}: the trials share one warm start (train.warm_start is set), but the space samples "
                    f"{', '.join(bad)}, which the warm start reads; sample only the LM-loss stage's keys, or set "
                    "train.warm_start: null in the overrides (each trial trains from its own start)")


def load_space(path: str | Path, overrides: list[str] | None = None) -> TuneSpace:
    """Loads and validates a tune space YAML."""
    space = load(TuneSpace, path, overrides)
    validate_space(space, path)
    return space


TRIAL_DRIVER_CPU = 0.01  # what a trial's driver function holds; its Ray Train workers reserve their own


def derived_concurrency(space: TuneSpace, cfg: TrainJobConfig, resources: dict[str, float]) -> int:
    """Trials that fit at once: GPUs (or CPUs) of the cluster / what one trial's workers need."""
    if space.max_concurrent_trials:
        return space.max_concurrent_trials
    if cfg.scaling.use_gpu:
        return max(1, math.floor(resources.get("GPU", 0) / cfg.scaling.num_workers))
    # Keep one whole CPU for Ray Data's tasks beside the training workers, plus the trial driver's share.
    need = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker + 1 + TRIAL_DRIVER_CPU
    return max(1, math.floor(resources.get("CPU", 1) / need))
