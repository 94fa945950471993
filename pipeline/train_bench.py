"""Selector-training throughput of one training worker, measured without Ray.

It times exactly what one Ray Train worker of ``jobs/train.py`` runs per micro-batch: the job's model
(:func:`pipeline.model.build_model`: frozen backbone, trainable method) wrapped in the job's engine
(:class:`pipeline.engine.Engine`: DeepSpeed ZeRO with the job's DeepSpeed JSON, or DDP) in the engine's precision
context, forward + backward + optimizer step. It leaves out what the job overlaps with training on other processes
(Ray Data's decoding and tokenising: the batches here are prepared before the clock starts) and Ray's reporting.

The batches are SynthVQA training conversations (generated in memory, seeded), tokenised by the backbone's own
processor, so sequence lengths are those of the embedded corpus. With a random-weight real-size backbone
(``stepprune.efficiency.backbones``) losses are meaningless, shapes and times are the real ones.

The process joins a one-rank ``torch.distributed`` group (NCCL on GPU, gloo on CPU) because DeepSpeed needs one;
with one rank ZeRO-2 has nothing to partition across, so the numbers are the per-GPU cost of the multi-GPU job
before its gradient all-reduce.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch

from pipeline.config import TrainJobConfig
from pipeline.model import backbone_dtype, build_model
from pipeline.worker_env import apply_worker_env


def synthvqa_batches(adapter, micro_batch: int, n_batches: int, seed: int = 0) -> list:
    """``n_batches`` PromptBatches of ``micro_batch`` SynthVQA training conversations on the adapter's device.

    Images are drawn image by image from the generator (train split, ``seed``); each image contributes its
    LLaVA-Instruct conversations (multi-turn, labels on every answer), exactly as the exported corpus does.
    """
    from stepprune.data.synthvqa.config import SynthVQAConfig
    from stepprune.data.synthvqa.export_llava import image_conversations
    from stepprune.data.synthvqa.sample import make_sample, question_records

    cfg = SynthVQAConfig(seed=seed)
    pairs: list[tuple[Any, list[dict]]] = []
    index = 0
    while len(pairs) < micro_batch * n_batches:
        sample = make_sample(cfg, "train", index)
        image = sample.rendered.to_pil()
        for record in image_conversations(sample.scene.image_id, question_records(sample)):
            pairs.append((image, record["conversations"]))
        index += 1
    out = []
    for b in range(n_batches):
        chunk = pairs[b * micro_batch:(b + 1) * micro_batch]
        out.append(adapter.prepare_conversations([im for im, _ in chunk], [c for _, c in chunk]))
    return out


def random_backbone(name: str, cfg: TrainJobConfig, device: torch.device):
    """A random-weight backbone at a real config (``stepprune.efficiency.backbones.REAL_CONFIGS``, e.g.
    ``"llava15_7b"``) on ``device``, in the job's backbone dtype (``"auto"``: bf16 on GPU, fp32 on CPU)."""
    from stepprune.efficiency.backbones import build_adapter, real_config

    return build_adapter(real_config(name), device=device, dtype=backbone_dtype(cfg, device),
                         attn_implementation=cfg.backbone.attn_implementation, seed=cfg.train.seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def one_rank_group(device: torch.device) -> Iterator[None]:
    """A one-process ``torch.distributed`` group (DeepSpeed requires one), torn down afterwards."""
    if torch.distributed.is_initialized():
        yield
        return
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    os.environ.update(env)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg: TrainJobConfig, device: torch.device, *, adapter=None, steps: int = 10, warmup: int = 2,
            batches: int = 4, seed: int = 0) -> dict[str, Any]:
    """Times ``steps`` optimizer steps (after ``warmup`` untimed ones) of the job's model and engine.

    Args:
        cfg: the job config, already set to one worker (``scaling.num_workers = 1``); its micro-batch size and
            gradient accumulation define a step.
        device: where the backbone and method run.
        adapter: a prebuilt backbone (e.g. random weights at the real size); default: ``backbone.path``.
        batches: distinct micro-batches prepared up front and cycled through.

    Returns:
        One record: the setting (engine, ZeRO stage, dtype, micro-batch, accumulation, trainable parameters,
        mean sequence length), the timings (median and mean seconds per optimizer step, samples per second),
        peak accelerator memory, and the method's loss and mean K over the timed steps.
    """
    if cfg.scaling.num_workers != 1:
        raise ValueError("the benchmark runs one worker: set scaling.num_workers=1")
    # The training job's worker environment: on CPU, DeepSpeed's CPU accelerator with its JIT-built comm op
    # cached where the job caches it.
    apply_worker_env(use_gpu=device.type == "cuda")
    from pipeline.engine import Engine, use_bf16

    torch.manual_seed(cfg.train.seed)
    with one_rank_group(device):
        model = build_model(cfg, device, adapter)
        # One rank: DDP would wrap nothing (as in the job with one worker); DeepSpeed runs over the group above.
        engine = Engine(model, cfg, distributed=cfg.deepspeed.enabled)
        data = synthvqa_batches(model.adapter, cfg.train.micro_batch_size, batches, seed)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times: list[float] = []
        losses: list[float] = []
        ks: list[float] = []
        micro = 0
        for step in range(warmup + steps):
            _sync(device)
            t0 = time.perf_counter()
            done = False
            while not done:
                prompt = data[micro % len(data)]
                micro += 1
                with engine.autocast(device):
                    out = engine.forward(prompt, step)
                engine.backward(out.loss)
                done = engine.step()
                if step >= warmup:
                    losses.append(float(out.loss.detach()))
                    k = out.metrics.get("K")
                    if isinstance(k, torch.Tensor):
                        ks.extend(k.detach().float().flatten().tolist())
            _sync(device)
            if step >= warmup:
                times.append(time.perf_counter() - t0)
        samples_per_step = cfg.train.micro_batch_size * cfg.grad_accum
        record = {
            "engine": engine.kind,
            "zero_stage": cfg.deepspeed.zero_stage if engine.kind == "deepspeed" else None,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "bf16": bool(use_bf16(cfg)),
            "backbone_dtype": str(next(model.adapter.model.parameters()).dtype).removeprefix("torch."),
            "method": cfg.method.name,
            "trainable_parameters": sum(p.numel() for p in engine.params),
            "micro_batch": cfg.train.micro_batch_size,
            "grad_accum": cfg.grad_accum,
            "mean_sequence_tokens": statistics.fmean(float(b.attention_mask.sum(1).float().mean()) for b in data),
            "steps_timed": steps,
            "warmup_steps": warmup,
            "s_per_step_median": statistics.median(times),
            "s_per_step_mean": statistics.fmean(times),
            "s_per_step": [round(t, 4) for t in times],
            "samples_per_s": samples_per_step / statistics.median(times),
            "loss_mean": statistics.fmean(losses),
            "K_mean": statistics.fmean(ks) if ks else None,
        }
        if device.type == "cuda":
            record["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        return record
