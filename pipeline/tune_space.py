"""Ray Tune search spaces as YAML (``tune_spaces/*.yaml``), validated against the training job's config.

A space names a base training config, the reduced-scale overrides every trial runs with, one distribution per
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
        overrides: dotted overrides applied to every trial (the reduced scale: steps, validation cadence).
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
    """The dotted overrides of one trial: the space's fixed overrides, the sampled values, the objective."""
    out = [f"{k}={_yaml(v)}" for k, v in space.overrides.items()]
    out += [f"{k}={_yaml(v)}" for k, v in params.items()]
    if space.target_k is not None:
        out += [f"validate.target_k={space.target_k}", f"validate.k_weight={space.k_weight}"]
    return out


def _yaml(v: Any) -> str:
    import json

    return "null" if v is None else json.dumps(v) if not isinstance(v, str) else v


def validate_space(space: TuneSpace, source: str | Path = "space") -> None:
    """Checks every key against the training config and builds a trial config at the space's corners."""
    base = load(TrainJobConfig, space.base_config)
    method = space.overrides.get("method.name", base.method.name)
    for key in (*space.overrides, *space.space):
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
