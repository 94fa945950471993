"""Connecting to Ray: a running cluster (``ray job submit`` sets ``RAY_ADDRESS``; or ``ray.address`` in the
config), or a local instance whose dashboard binds to 127.0.0.1 unless configured otherwise.

Workers get :func:`pipeline.worker_env.worker_env` (offline, no telemetry, DeepSpeed's CPU accelerator without a
GPU) and the repository on their import path.
"""

from __future__ import annotations

import os

import ray

from pipeline.config import RayConfig
from pipeline.worker_env import REPO, apply_worker_env


def init_ray(cfg: RayConfig, use_gpu: bool = False, extra_cpus: int = 0) -> bool:
    """Connects to the configured or ambient cluster, or starts a local one.

    Returns True when this call started a local instance (the caller may shut it down when done with it), False
    when Ray was already up in this process or the call connected to a running cluster.

    `extra_cpus` adds logical CPUs to a local instance for drivers that hold a fraction of a CPU (Ray Tune's trial
    drivers): without it, 0.01 CPU held by a trial leaves Ray Data 0.99 of its one spare CPU, and its 1-CPU read
    tasks never schedule.
    """
    if ray.is_initialized():
        return False
    env = apply_worker_env(use_gpu)
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Inside `ray job submit` the job's working_dir is already on the workers' path.
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        return False
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Logical CPUs: one more than the cores so Ray Data's decode tasks can run beside the training workers.
    num_cpus = cfg.num_cpus if cfg.num_cpus is not None else (os.cpu_count() or 2) + 1 + extra_cpus
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host=cfg.dashboard_host,
             runtime_env={"env_vars": env}, log_to_driver=True, configure_logging=False)
    return True
