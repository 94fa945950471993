"""The model a training job trains: the frozen backbone plus the trainable method, built from the job config.

Ray-free, so that the training loop (:mod:`pipeline.train_loop`) and the single-process throughput benchmark
(:mod:`pipeline.train_bench`) build exactly the same thing.
"""

from __future__ import annotations

from typing import Any

import torch

import stepprune
from pipeline.config import TrainJobConfig


def method_config(cfg: TrainJobConfig) -> dict[str, Any]:
    """The method's config with the run length filled in (schedules such as StepPrune's alpha/beta need it)."""
    values = dict(cfg.method.config)
    fields = {f for f in stepprune.method_class(cfg.method.name).config_class.__dataclass_fields__}
    if "total_steps" in fields:
        values.setdefault("total_steps", cfg.train.max_steps)
    return values


def backbone_dtype(cfg: TrainJobConfig, device: torch.device) -> torch.dtype:
    """``backbone.dtype`` as a torch dtype, with ``"auto"`` resolved: bf16 on GPU, fp32 on CPU."""
    if cfg.backbone.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.backbone.dtype)


def build_model(cfg: TrainJobConfig, device: torch.device,
                adapter: stepprune.BackboneAdapter | None = None) -> stepprune.PrunedVLM:
    """Frozen backbone + trainable method on ``device``.

    Args:
        adapter: an already built backbone (the benchmark's random-weight real-size model); by default the one
            saved under ``backbone.path`` is loaded.
    """
    if adapter is None:
        adapter = stepprune.load_backbone(cfg.backbone.path, device=device, dtype=backbone_dtype(cfg, device),
                                          attn_implementation=cfg.backbone.attn_implementation,
                                          trust_remote_code=cfg.backbone.trust_remote_code)
    method = stepprune.build_method(cfg.method.name, method_config(cfg))
    if hasattr(method, "bind"):
        method.bind(adapter)
    if cfg.train.init_selector:
        init_from(method, cfg.train.init_selector, adapter)
    if cfg.train.trainable is not None:
        freeze_except(method, cfg.train.trainable)
    return stepprune.PrunedVLM(adapter, method, loss_per=cfg.train.loss_per)


def freeze_except(method: torch.nn.Module, prefixes: list[str]) -> None:
    """Leaves only the parameters whose names start with one of ``prefixes`` trainable (``train.trainable``).

    Raises:
        ValueError: naming a prefix that matches no parameter, with the method's top-level parameter groups.
    """
    def under(name: str, prefix: str) -> bool:  # whole name parts: "decoder.st" is not "decoder.stop"
        return name == prefix or name.startswith(prefix.rstrip(".") + ".")

    names = [n for n, _ in method.named_parameters()]
    for prefix in prefixes:
        if not any(under(n, prefix) for n in names):
            groups = sorted({".".join(n.split(".")[:2]) for n in names})
            raise ValueError(f"train.trainable: {prefix!r} names no parameter of the {method.name} method; "
                             f"its groups: {groups}")
    for n, p in method.named_parameters():
        p.requires_grad_(any(under(n, x) for x in prefixes))


def init_from(method: stepprune.PruningMethod, folder: str, adapter: stepprune.BackboneAdapter) -> None:
    """Loads a saved selector's weights into ``method`` (``train.init_selector``).

    Raises:
        ValueError: naming the folder, when it holds another method or weights of another shape.
    """
    from stepprune.checkpoint import load_checkpoint

    saved = load_checkpoint(folder, adapter)
    if saved.name != method.name:
        raise ValueError(f"train.init_selector={folder} holds a {saved.name} selector, the job trains {method.name}")
    try:
        method.load_state_dict(saved.state_dict())
    except RuntimeError as err:  # missing/unexpected keys or shapes: another architecture
        raise ValueError(f"train.init_selector={folder} does not fit the job's {method.name} config: {err}") from None
