"""The environment every process of a job runs under, Ray workers or not (no Ray import, so the one-process
benchmarks share it): offline hub access, no telemetry, DeepSpeed's CPU accelerator and a persistent JIT-extension
cache when there is no GPU."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker_env(use_gpu: bool) -> dict[str, str]:
    """Environment variables for the job's workers (values already set in this process win for the cache)."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray Train routes a worker's print() to its logger as well as to the (wrapped) stdout, so every progress
        # line reached the driver twice.
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")),
    }
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's CPU accelerator (gloo); no CUDA probing
    return env


def apply_worker_env(use_gpu: bool) -> dict[str, str]:
    """Sets :func:`worker_env` in this process, keeping variables already set; returns the full mapping."""
    env = worker_env(use_gpu)
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    return env


def prebuild_cpu_ops() -> str | None:
    """Compiles DeepSpeed's shared-memory collective op (``ShareMemCommBuilder``) into the JIT-extension cache,
    which DeepSpeed's CPU accelerator loads in every training process. ``make setup`` runs it: JIT-compiled on first
    use it cost the first training job 54 s of its run on 2 cores. Returns the op's name, or None when DeepSpeed
    says the op is not buildable here (DeepSpeed then does without it, as at run time).

    torch builds with the ``ninja`` first on PATH, and two ninja versions rebuild each other's builds (their build
    logs hash the same command differently: the ``ninja`` wheel of this environment against the system's 1.11 here),
    so this builds with the PATH it is given: ``make setup``'s is ``make train``'s. A job started with another ninja
    first on PATH (``ray job submit`` from an activated environment) compiles it once more.
    """
    apply_worker_env(use_gpu=False)
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    builder.load()
    return builder.absolute_name()


if __name__ == "__main__":
    print(f"prebuilt: {prebuild_cpu_ops()} in {os.environ['TORCH_EXTENSIONS_DIR']}")
