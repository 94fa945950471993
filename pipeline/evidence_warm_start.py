"""Runs the evidence-supervised warm start (:mod:`stepprune.selector.evidence_warm_start`) on the job's own model.

Ray-free and single-process: the job config's method is built exactly as the training job builds it
(:func:`pipeline.model.build_model`), trained with AdamW on L_ev over SynthVQA questions that record their evidence,
and saved as a selector checkpoint that ``train.init_selector`` (or any evaluation) can load.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.config import TrainJobConfig
from pipeline.model import build_model


def warm_start(cfg: TrainJobConfig, items: Sequence[Any], out: str | Path, *, steps: int, batch_size: int = 8,
               lr: float = 1e-3, seed: int = 0, log_every: int = 50,
               log: Callable[[str], None] = print) -> Path:
    """Trains the job's selector on L_ev for ``steps`` AdamW steps and saves it to ``out``.

    Args:
        cfg: the job config (its method, backbone and ``train.loss_per`` are used; the selector is built as the
            training job builds it).
        items: SynthVQA questions with ``meta["evidence"]`` (``describe`` and evidence-less ones are skipped).
        out: the checkpoint folder to write.
        steps, batch_size, lr: AdamW steps, questions per step, learning rate.
        seed: initialisation and the order the questions are drawn in.

    Returns:
        The checkpoint folder.

    Raises:
        ValueError: no question records evidence, or the method has no pointer to supervise.
    """
    from stepprune.checkpoint import save_checkpoint
    from stepprune.selector.evidence_warm_start import evidence_loss, first_step_logits

    pool = [it for it in items if it.meta.get("evidence") and it.meta.get("family") != "describe"]
    if not pool:
        raise ValueError("evidence warm start: no question records evidence (meta['evidence']): use SynthVQA")
    torch.manual_seed(seed)
    model = build_model(cfg, torch.device("cpu"))
    adapter, method = model.adapter, model.method
    if not hasattr(method, "decoder"):
        raise ValueError(f"evidence warm start: {method.name} has no pointer decoder to supervise (StepPrune only)")
    method.train()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(seed)
    images: dict[str, Any] = {}
    t0, recent = time.perf_counter(), []
    for step in range(steps):
        batch = rng.sample(pool, min(batch_size, len(pool)))
        for it in batch:
            if it.qid not in images:
                images[it.qid] = it.load_image()
        prompt = adapter.prepare([images[it.qid] for it in batch], [it.prompt for it in batch])
        ctx = model.context(prompt)
        loss = evidence_loss(first_step_logits(method, ctx), [it.meta["evidence"] for it in batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log(f"[warm-start] step {step + 1}/{steps} L_ev {sum(recent) / len(recent):.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
            recent = []
    return save_checkpoint(method, out, adapter=adapter, step=steps)
