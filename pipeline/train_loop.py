"""The project's one training loop, run by every Ray Train worker.

Each worker loads the frozen backbone (eval mode, no grads; bf16 on GPU), builds the trainable method, wraps the
``PrunedVLM`` in the engine (DeepSpeed ZeRO or DDP), resumes from Ray Train's latest checkpoint if there is one,
and streams its dataset shard. Every ``report_every`` optimizer steps all ranks call ``ray.train.report`` (Ray
requires the same number of calls on every rank); rank 0 logs metrics to MLflow and prints a progress line.
Every ``checkpoint_every`` steps each rank writes its engine state (DeepSpeed's optimizer shard) into one
checkpoint folder, rank 0 adds the selector files (``stepprune.checkpoint`` format) and ``trainer_state.json``.

A resumed run restarts at the step after its checkpoint and skips the micro-batches of the current epoch that
the checkpointed steps had consumed, so no completed step is lost or repeated.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch

import stepprune
from pipeline.config import TrainJobConfig
from pipeline.config_loader import from_dict
from pipeline.data import rows_to_batch
from pipeline.engine import Engine
from pipeline.model import build_model
from pipeline.tracking import MlflowTracker, NullTracker, log_histogram
from stepprune.checkpoint import save_checkpoint

STATE_FILE = "trainer_state.json"


def _scalar_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Splits a method's metrics into scalars and per-sample lists (e.g. K for the histogram)."""
    scalars, lists = {}, {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().float().cpu()
            if v.numel() == 1:
                scalars[k] = float(v)
            else:
                lists[k] = v.flatten().tolist()
        elif isinstance(v, (int, float)):
            scalars[k] = float(v)
    return scalars, lists


def _all_mean(values: dict[str, float], world: int) -> dict[str, float]:
    if world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: float(x) / world for k, x in zip(keys, t.tolist())}


def _all_gather_lists(values: dict[str, list[float]], world: int) -> dict[str, list[float]]:
    if world == 1:
        return values
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, values)
    out: dict[str, list[float]] = {}
    for part in gathered:
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    return out


def _validate(cfg: TrainJobConfig, model: stepprune.PrunedVLM, items, rank: int, world: int) -> dict[str, float]:
    """Rank 0 validates; every rank receives the same numbers (all ranks report identical metrics)."""
    from pipeline.heldout import validation_metrics

    keys = ("val_accuracy", "val_K_mean", "val_objective")
    vals = dict.fromkeys(keys, 0.0)
    if rank == 0:
        v = cfg.validate
        vals = validation_metrics(model.adapter, model.method, items, v.benchmark, batch_size=v.batch_size,
                                  max_new_tokens=v.max_new_tokens, target_k=v.target_k, k_weight=v.k_weight)
    if world > 1:
        t = torch.tensor([vals[k] for k in keys], dtype=torch.float64)
        torch.distributed.broadcast(t, src=0)
        vals = dict(zip(keys, t.tolist()))
    return vals


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config`` = {"job": TrainJobConfig as a dict, "mlflow": {...}}."""
    cfg = from_dict(TrainJobConfig, config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.train.threads_per_worker:
        torch.set_num_threads(cfg.train.threads_per_worker)
    torch.manual_seed(cfg.train.seed + rank)
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else torch.device("cpu")
    model = build_model(cfg, device)
    engine = Engine(model, cfg, distributed=world > 1 or cfg.deepspeed.enabled)
    adapter, method = model.adapter, model.method

    step, micro_in_epoch, epoch = 0, 0, 0
    run_id = config["mlflow"].get("run_id")
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            engine.load(Path(d) / "engine")
            state = json.loads((Path(d) / STATE_FILE).read_text())
        step, micro_in_epoch, epoch = state["step"], state["micro_in_epoch"], state["epoch"]
        engine.micro_step = state["micro_step"]
        if rank == 0:
            print(f"[train] resumed from step {step} (epoch {epoch})", flush=True)
    tracker = (MlflowTracker(config["mlflow"]["uri"], run_id=run_id) if rank == 0 and run_id else NullTracker())
    # Steps after the last committed checkpoint may have been logged before a failure; they are recomputed on
    # the same data from the same state, so log each step once.
    logged_up_to = tracker.last_step("loss")

    val_items = None
    if cfg.validate.every and rank == 0:
        from stepprune.benchmarks import get_benchmark

        val_items = get_benchmark(cfg.validate.benchmark).load(cfg.validate.folder, limit=cfg.validate.max_items)
    last_val: dict[str, float] = {}

    fail_marker = Path(config["storage_dir"]) / "_fault_injected"
    shard = ray.train.get_dataset_shard("train")
    pad = adapter.pad_token_id
    window_scalars: dict[str, list[float]] = {}
    window_lists: dict[str, list[float]] = {}
    t_window, samples_window = time.perf_counter(), 0
    while step < cfg.train.max_steps:
        skip = micro_in_epoch
        for batch in shard.iter_batches(batch_size=cfg.train.micro_batch_size, batch_format="numpy",
                                        drop_last=True):
            if skip:
                skip -= 1
                continue
            packed = rows_to_batch(batch, pad)
            prompt = adapter.finish(packed["encoded"], packed["ids"])
            with engine.autocast(device):
                out = engine.forward(prompt, step)
            engine.backward(out.loss)
            micro_in_epoch += 1
            samples_window += prompt.batch_size
            scalars, lists = _scalar_metrics(out.metrics)
            scalars.update(loss=float(out.loss.detach()), lm_loss=float(out.lm_loss), aux_loss=float(out.aux_loss))
            for k, v in scalars.items():
                window_scalars.setdefault(k, []).append(v)
            for k, v in lists.items():
                window_lists.setdefault(k, []).extend(v)
            if not engine.step():
                continue
            step += 1
            if cfg.train.fail_at_step == step and rank == cfg.train.fail_rank and not fail_marker.exists():
                fail_marker.write_text(f"killed rank {rank} at step {step}\n")
                os.kill(os.getpid(), signal.SIGKILL)  # a real worker death, not a Python exception
            if step % cfg.train.report_every == 0 or step == cfg.train.max_steps:
                metrics = _all_mean({k: float(np.mean(v)) for k, v in window_scalars.items()}, world)
                lists_all = _all_gather_lists(window_lists, world)
                dt = time.perf_counter() - t_window
                metrics.update(step=step, epoch=epoch, lr=engine.lr,
                               samples_per_s=samples_window * world / max(dt, 1e-9))
                if "K" in lists_all:
                    ks = np.asarray(lists_all["K"])
                    metrics.update(K_mean=float(ks.mean()), K_std=float(ks.std()))
                window_scalars, window_lists = {}, {}
                if cfg.validate.every and (step % cfg.validate.every == 0 or step == cfg.train.max_steps):
                    last_val = _validate(cfg, model, val_items, rank, world)
                metrics.update(last_val)  # carried forward so every report has it (schedulers need it)
                t_window, samples_window = time.perf_counter(), 0
                checkpoint_now = step % cfg.train.checkpoint_every == 0 or step == cfg.train.max_steps
                if rank == 0 and step > logged_up_to:
                    tracker.log_metrics({k: v for k, v in metrics.items() if k != "step"}, step=step)
                    if "K" in lists_all and checkpoint_now:
                        log_histogram(tracker, lists_all["K"], f"plots/k_hist_step{step:06d}.png",
                                      f"K at step {step}", "visual tokens kept (K)")
                    shown = " ".join(f"{k}={metrics[k]:.4g}" for k in (
                        "loss", "lm_loss", "aux_loss", "K_mean", "text_effect", "question_effect", "lr",
                        "samples_per_s", "val_accuracy", "val_K_mean") if k in metrics)
                    print(f"[train] step {step}/{cfg.train.max_steps} {shown}", flush=True)
                if checkpoint_now:
                    with tempfile.TemporaryDirectory() as tmp:
                        root = Path(tmp)
                        engine.save(root / "engine", rank)
                        if rank == 0:
                            save_checkpoint(method, root / "selector", adapter=adapter, step=step)
                            (root / STATE_FILE).write_text(json.dumps({
                                "step": step, "epoch": epoch, "micro_in_epoch": micro_in_epoch,
                                "micro_step": engine.micro_step, "mlflow_run_id": run_id}))
                        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
                else:
                    ray.train.report(metrics)
            if step >= cfg.train.max_steps:
                break
        else:
            epoch, micro_in_epoch = epoch + 1, 0
            continue
        break
