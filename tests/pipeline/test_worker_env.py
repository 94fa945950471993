"""The job environment's one-time build: DeepSpeed's CPU collective op, compiled by ``make setup``."""

import os
from pathlib import Path

import pytest

from pipeline.worker_env import prebuild_cpu_ops


@pytest.mark.slow
def test_the_cpu_collective_op_is_built_into_the_jit_cache_the_workers_read():
    name = prebuild_cpu_ops()  # a cache hit after `make setup`; a compile (~35 s on 2 cores) otherwise
    if name is None:
        pytest.skip("DeepSpeed reports its shared-memory op as not buildable on this machine")
    built = list(Path(os.environ["TORCH_EXTENSIONS_DIR"]).glob("deepspeed_shm_comm/*.so"))
    assert name.endswith("shm_comm_op") and built
