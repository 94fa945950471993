"""The training engine: DeepSpeed ZeRO (default, GPU or CPU) or DDP, behind one small interface.

This is the only place DeepSpeed settings are derived from the job config (:func:`deepspeed_config`). Only the
method's parameters are trainable: ``PrunedVLM`` registers the method as its one submodule and holds the frozen
backbone as a plain attribute, so neither DeepSpeed nor DDP wraps, casts or partitions the backbone.

On CPU, DeepSpeed runs with its CPU accelerator over the gloo process group Ray Train sets up (verified in
../shared/design/stack.md §4; its ``shm_comm`` op is JIT-built once into ``TORCH_EXTENSIONS_DIR``). The optimizer
is a client ``torch.optim.AdamW`` (no fused-Adam build needed) and the scheduler a client ``LambdaLR``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import TrainJobConfig

ENGINE_TAG = "ckpt"


def lr_lambda(cfg: TrainJobConfig):
    """Linear warm-up to ``optim.lr`` then cosine decay to ``optim.min_lr`` over ``train.max_steps``."""
    warm, total = cfg.warmup_steps, cfg.train.max_steps
    floor = cfg.optim.min_lr / cfg.optim.lr

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def use_bf16(cfg: TrainJobConfig) -> bool:
    return cfg.deepspeed.bf16 if cfg.deepspeed.bf16 is not None else cfg.scaling.use_gpu


def deepspeed_config(cfg: TrainJobConfig) -> dict[str, Any]:
    """The DeepSpeed JSON, derived from the job config."""
    zero: dict[str, Any] = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_batch_size": cfg.train.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": use_bf16(cfg)},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _optimizer(params, cfg: TrainJobConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                             weight_decay=cfg.optim.weight_decay)


class Engine:
    """Forward/backward/step and checkpoint I/O for one worker.

    Args:
        model: the ``PrunedVLM`` (its only parameters are the method's).
        cfg: the job config.
        distributed: whether a torch.distributed process group is up (Ray Train sets it up).
    """

    def __init__(self, model: nn.Module, cfg: TrainJobConfig, distributed: bool):
        self.cfg = cfg
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the method has no trainable parameters")
        self.kind = "deepspeed" if cfg.deepspeed.enabled else "ddp"
        self.micro_step = 0
        if self.kind == "deepspeed":
            import deepspeed

            opt = _optimizer(params, cfg)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, model_parameters=params, optimizer=opt, lr_scheduler=sched,
                config=deepspeed_config(cfg), dist_init_required=False)
            self.module = self.engine.module
        else:
            if distributed:
                from ray.train.torch import prepare_model

                self.engine = prepare_model(model, move_to_device=False,
                                            parallel_strategy_kwargs={"find_unused_parameters": True})
            else:
                self.engine = model
            self.module = model
            self.optimizer = _optimizer(params, cfg)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.params = params

    def forward(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def autocast(self, device: torch.device):
        """The mixed-precision context for :meth:`forward`. DeepSpeed keeps the method's weights in bf16 itself
        (its ``bf16`` section) and turns torch autocast off inside its engine, so it gets none; DDP on a GPU gets
        bf16 autocast when bf16 is on."""
        if self.kind == "ddp" and device.type == "cuda" and use_bf16(self.cfg):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.kind == "deepspeed":
            self.engine.backward(loss)  # DeepSpeed scales by 1/accumulation itself
        else:
            (loss / self.cfg.grad_accum).backward()

    def step(self) -> bool:
        """Ends one micro-step; returns True when it completed an optimizer step."""
        self.micro_step += 1
        boundary = self.micro_step % self.cfg.grad_accum == 0
        if self.kind == "deepspeed":
            self.engine.step()  # steps optimizer + scheduler only at accumulation boundaries
            return boundary
        if boundary:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return boundary

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, folder: Path, rank: int) -> None:
        """Writes this rank's engine state (optimizer shard, scheduler) under ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "deepspeed":
            self.engine.save_checkpoint(str(folder), tag=ENGINE_TAG)
        elif rank == 0:
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "model": self.module.state_dict()}, folder / "ddp_state.pt")
            (folder / "micro_step.json").write_text(json.dumps({"micro_step": self.micro_step}))

    def load(self, folder: Path) -> None:
        """Restores weights, optimizer and scheduler from :meth:`save`'s output."""
        if self.kind == "deepspeed":
            path, _ = self.engine.load_checkpoint(str(folder), tag=ENGINE_TAG)
            if path is None:
                raise FileNotFoundError(f"no DeepSpeed checkpoint under {folder}")
        else:
            state = torch.load(folder / "ddp_state.pt", map_location="cpu", weights_only=True)
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
