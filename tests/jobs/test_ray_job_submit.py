"""`ray job submit` of the training job against a `ray start --head` cluster on this machine."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.train_fixtures import train_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_trains_on_a_head_node(tmp_path, tiny_llava_dir):
    bin_dir = Path(sys.executable).parent
    # The environment's bin first on PATH, as in an activated environment. Its ninja is not the one `make setup`
    # compiled DeepSpeed's CPU op with, and two ninjas rebuild each other's builds, so this cluster compiles into a
    # cache of its own rather than making every later job in this checkout compile again.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")}
    port, dash = _free_port(), _free_port()
    temp = Path("/tmp") / f"rayjob{port}"  # short: Ray's socket paths have a length limit
    start = [str(bin_dir / "ray"), "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", "--num-cpus=3", f"--temp-dir={temp}", "--disable-usage-stats",
             "--include-dashboard=true"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        overrides = train_overrides(tmp_path, tiny_llava_dir, **{"scaling.num_workers": 1, "train.max_steps": 2,
                                                                 "deepspeed.enabled": True})
        submit = [str(bin_dir / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                  "--working-dir", str(ROOT),
                  "--runtime-env-json", '{"excludes": [".venv", "runs", "data", ".cache", ".git", "*.db"]}',
                  "--", "python", "jobs/train.py", *overrides]
        t0 = time.time()
        for _ in range(12):
            out = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
            log = out.stdout + out.stderr
            # The head's job agent registers asynchronously after `ray start` (slowly on a loaded machine); a
            # submission refused for that creates no job, so it is safe to submit again.
            if "No available agent to submit job" not in log:
                break
            time.sleep(10)
        assert out.returncode == 0, log[-4000:]
        assert "succeeded" in log, log[-4000:]
        assert "[train] step 2/2" in log and "selector checkpoint:" in log, log[-4000:]
        assert log.count("[train] step 2/2") == 1, log[-4000:]  # printed once by rank 0, shown once
        assert (tmp_path / "runs" / "t" / "final" / "selector" / "selector.safetensors").exists()
        print(f"ray job submit took {time.time() - t0:.0f} s")
    finally:
        subprocess.run([str(bin_dir / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
