"""The single-process training benchmark times the job's own model and DeepSpeed engine on SynthVQA batches."""

import json

import pytest
import torch

from pipeline.config import TrainJobConfig
from pipeline.config_loader import load
from pipeline.train_bench import measure, synthvqa_batches
from tests.pipeline.train_fixtures import TINY_SELECTOR


def _cfg(backbone, *extra: str) -> TrainJobConfig:
    return load(TrainJobConfig, None, [
        f"backbone.path={backbone}", "method.name=stepprune", f"method.config={json.dumps(TINY_SELECTOR)}",
        "train.global_batch_size=4", "train.micro_batch_size=2", "train.max_steps=10", "scaling.num_workers=1",
        *extra])


def test_synthvqa_batches_are_labelled_conversations_and_deterministic(llava):
    a = synthvqa_batches(llava, micro_batch=3, n_batches=2)
    b = synthvqa_batches(llava, micro_batch=3, n_batches=2)
    assert [x.batch_size for x in a] == [3, 3]
    for x, y in zip(a, b):
        assert torch.equal(x.input_ids, y.input_ids)
        assert x.labels is not None and bool((x.labels != -100).any())
    assert not torch.equal(a[0].input_ids[0], a[1].input_ids[0])  # distinct conversations, not one repeated


def test_benchmark_runs_deepspeed_zero2_with_accumulation_and_reports_each_timed_step(tiny_llava_dir, one_thread):
    cfg = _cfg(tiny_llava_dir, "deepspeed.enabled=true", "deepspeed.zero_stage=2")
    assert cfg.grad_accum == 2
    rec = measure(cfg, torch.device("cpu"), steps=2, warmup=1, batches=2)
    assert (rec["engine"], rec["zero_stage"], rec["grad_accum"], rec["micro_batch"]) == ("deepspeed", 2, 2, 2)
    assert len(rec["s_per_step"]) == 2 and all(t > 0 for t in rec["s_per_step"])
    # 2 micro-batches of 2 samples per optimizer step
    assert rec["samples_per_s"] == pytest.approx(4 / rec["s_per_step_median"], rel=1e-3)
    assert 1 <= rec["K_mean"] <= TINY_SELECTOR["k_max"]
    assert rec["trainable_parameters"] > 0 and rec["bf16"] is False
    assert not torch.distributed.is_initialized()  # the one-rank group is torn down


def test_benchmark_refuses_a_multi_worker_config(tiny_llava_dir):
    with pytest.raises(ValueError, match="one worker"):
        measure(_cfg(tiny_llava_dir, "scaling.num_workers=2", "train.global_batch_size=4"), torch.device("cpu"))


def test_engine_autocast_leaves_precision_to_deepspeed_and_is_off_on_cpu(tiny_llava_dir):
    from types import SimpleNamespace

    from pipeline.engine import Engine

    cfg = _cfg(tiny_llava_dir, "deepspeed.bf16=true")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert not isinstance(Engine.autocast(SimpleNamespace(kind="deepspeed", cfg=cfg), cuda), torch.autocast)
    assert not isinstance(Engine.autocast(SimpleNamespace(kind="ddp", cfg=cfg), cpu), torch.autocast)
    ctx = Engine.autocast(SimpleNamespace(kind="ddp", cfg=cfg), cuda)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


def test_a_real_config_name_builds_its_random_weight_backbone_in_the_job_dtype(tiny_llava_dir, monkeypatch):
    import pipeline.train_bench as bench
    import stepprune.efficiency.backbones as backbones

    seen = {}
    monkeypatch.setattr(backbones, "build_adapter", lambda config, **kw: seen.update(kw, type=config.model_type))
    bench.random_backbone("llava15_7b", _cfg(tiny_llava_dir, "backbone.dtype=bfloat16"), torch.device("cpu"))
    assert (seen["type"], seen["dtype"], str(seen["device"])) == ("llava", torch.bfloat16, "cpu")
