"""Shared fixtures: tiny backbones built offline once per session, deterministic images, and the environment a
2-core CPU machine with no network needs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from pathlib import Path  # noqa: E402

import contextlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def make_images(n: int, seed: int = 0, size: tuple[int, int] = (96, 96)) -> list[Image.Image]:
    """``n`` deterministic random RGB images (width, height = ``size``)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


PROMPTS = [
    "What color is the square?",
    "How many objects are there in the image? Count them carefully.",
    "Is there a red circle?",
]


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    from stepprune.backbones.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), seed=0)


@pytest.fixture(scope="session")
def synthvqa_test_folder(tmp_path_factory):
    """A SynthVQA test split of two images in its native format (questions.jsonl with evidence), generated offline."""
    from stepprune.data.synthvqa import generate_synthvqa

    root = tmp_path_factory.mktemp("synthvqa")
    generate_synthvqa(root, seed=0, n_train_images=0, n_val_images=0, n_test_images=2, llava_splits=(),
                      benchmark_splits=())
    return root / "native" / "test"


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    from stepprune.backbones.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen"), seed=0)


@pytest.fixture(scope="session")
def llava(tiny_llava_dir):
    import stepprune

    torch.manual_seed(0)
    return stepprune.load_backbone(tiny_llava_dir)


@pytest.fixture(scope="session")
def qwen(tiny_qwen_dir):
    import stepprune

    return stepprune.load_backbone(tiny_qwen_dir)


@pytest.fixture(params=["llava", "qwen"])
def adapter(request):
    """Each test using it runs once per supported backbone family."""
    return request.getfixturevalue(request.param)


@contextlib.contextmanager
def single_threaded():
    """Runs torch on one intra-op thread, then restores the previous count. Tests on tiny tensors are faster this
    way, and on the shared 2-core CI machine a second OpenMP thread mostly spins (10x slower under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_thread():
    """:func:`single_threaded` as a fixture (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with single_threaded():
        yield


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance for the whole session (starting Ray costs ~8 s on 2 cores)."""
    import ray

    from pipeline.worker_env import apply_worker_env

    env = apply_worker_env(use_gpu=False)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")), runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
