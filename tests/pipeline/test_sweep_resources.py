"""Resources of a sweep: trials that fit at once, and the local instance's spare CPU for Ray Data beside them."""

import pytest

from pipeline.config import RayConfig, TrainJobConfig
from pipeline.config_loader import load
from pipeline.tune_space import TRIAL_DRIVER_CPU, derived_concurrency, load_space
from tests.test_tune_spaces import ROOT


@pytest.fixture
def embedded():
    return load_space(ROOT / "tune_spaces" / "embedded.yaml"), load(TrainJobConfig, ROOT / "jobs/configs/embedded.yaml")


@pytest.mark.parametrize("cpus,trials", [(3, 1), (4, 1), (6, 1), (7, 2), (13, 4)])
def test_cpu_trials_leave_a_whole_cpu_for_data_beside_the_drivers(embedded, cpus, trials):
    space, cfg = embedded  # one worker of 2 CPUs per trial
    space.max_concurrent_trials = None
    assert derived_concurrency(space, cfg, {"CPU": cpus}) == trials
    # the CPUs the trials hold leave at least one whole CPU per trial for Ray Data's 1-CPU read tasks
    if cpus >= 3 + TRIAL_DRIVER_CPU:
        held = trials * (cfg.scaling.num_workers * cfg.scaling.cpus_per_worker + TRIAL_DRIVER_CPU)
        assert cpus - held >= trials


def test_an_explicit_concurrency_wins(embedded):
    space, cfg = embedded
    space.max_concurrent_trials = 3
    assert derived_concurrency(space, cfg, {"CPU": 4}) == 3


def test_the_local_sweep_instance_gets_a_cpu_for_the_trial_drivers(monkeypatch):
    import pipeline.cluster as cluster

    seen = {}
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr(cluster.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cluster.os, "environ", {k: v for k, v in cluster.os.environ.items() if k != "RAY_ADDRESS"})
    cluster.init_ray(RayConfig(), extra_cpus=1)
    assert seen["num_cpus"] == 2 + 1 + 1 and seen["dashboard_host"] == "127.0.0.1"
    cluster.init_ray(RayConfig())
    assert seen["num_cpus"] == 3
