"""How a trainable selector's choice of tokens moves during training: evidence recall against chance, step by step.

The training job reports accuracy once, at the end, and one run per seed costs a Ray cluster start and 10 minutes on
2 cores. This runs the job's own training step in one process, as :mod:`pipeline.train_bench` does (the job's model
from :func:`pipeline.model.build_model`, the job's engine :class:`pipeline.engine.Engine`, with its DeepSpeed JSON,
learning-rate schedule and gradient clipping), on SynthVQA training conversations generated in memory, and every
``every`` optimizer steps measures what the method's *inference* selection keeps on held-out questions that record
their evidence patches:

* ``recall``: the mean share of each question's evidence patches that reach the LLM's last layer
  (:func:`stepprune.evaluation.token_recall`, the eval matrix's token recall);
* ``chance``: the recall a uniformly random subset of the same size has in expectation, the mean of K / N;
* ``K``: the mean number of visual tokens kept.

A selector that learns from the LM loss what answers the question should move ``recall / chance`` above 1. The seed
only sets the method's initialisation (and the noise draws); the data and its order are the same for every seed, so
runs that differ only in the seed show how stable the training is.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch

from pipeline.config import TrainJobConfig
from pipeline.model import build_model
from pipeline.train_bench import one_rank_group, synthvqa_batches
from pipeline.worker_env import apply_worker_env


def evidence_recall(vlm, prompts: list, items: list) -> dict[str, float]:
    """The inference selection's evidence recall, its chance level and mean K over prepared held-out batches.

    Args:
        vlm: a :class:`stepprune.PrunedVLM` (its method is put in eval mode for the measurement, then restored).
        prompts: PromptBatches of the questions (no answers), in the order of ``items``.
        items: benchmark items whose ``meta["evidence"]`` lists patch indices; items without evidence are skipped.
    """
    from stepprune.evaluation import token_recall

    method = vlm.method
    was_training = method.training
    method.eval()
    finals, kept, n_tokens = [], [], []
    try:
        with torch.no_grad():
            for prompt in prompts:
                ctx = vlm.context(prompt)
                _, visual = vlm.llm_inputs(ctx)
                for b in range(prompt.batch_size):
                    k = int(visual.count[b])
                    finals.append(visual.source_index[b, :k].tolist())
                    kept.append(k)
                    n_tokens.append(int(ctx.vision.num_tokens[b]))
    finally:
        method.train(was_training)
    with_evidence = [i for i, it in enumerate(items) if it.meta.get("evidence")]
    if not with_evidence:
        raise ValueError("no held-out item records evidence patches (meta['evidence']): use a SynthVQA folder")
    recall = token_recall([items[i] for i in with_evidence],
                          [SimpleNamespace(final_index=finals[i]) for i in with_evidence])
    return {"recall": float(recall), "chance": statistics.fmean(kept[i] / n_tokens[i] for i in with_evidence),
            "K": statistics.fmean(kept)}


def run(cfg: TrainJobConfig, items: list, *, steps: int, every: int, seed: int, batch_size: int = 16,
        device: torch.device | None = None) -> Iterator[dict[str, Any]]:
    """Trains the job's method for ``steps`` optimizer steps from initialisation ``seed`` and measures the selection.

    Args:
        cfg: the job config, set to one worker (``scaling.num_workers = 1``); ``method.config.total_steps`` should
            equal ``steps`` so the schedules (alpha, beta, lambda) run their whole course.
        items: held-out benchmark items with evidence (e.g. ``synthvqa.load(cfg.eval.folder, limit=...)``).
        steps: optimizer steps (micro-batches of the config's size, ``grad_accum`` per step).
        every: measure after every this many steps, at step 0 and at the end.
        seed: the method's initialisation and the training path's random draws (the data is seed 0 throughout).

    Yields:
        One record per measurement, as it is taken: ``step``, ``recall``, ``chance``, ``K`` and, after step 0, the
        mean training ``lm_loss`` and ``K_train`` of the steps since the previous record, for methods that report
        them the mean training gate on the selection and off it (``g_selected``, ``g_rest``: StepPrune's), and the
        wall seconds so far.
    """
    if cfg.scaling.num_workers != 1:
        raise ValueError("selection dynamics run one worker: set scaling.num_workers=1")
    device = device or torch.device("cpu")
    apply_worker_env(use_gpu=device.type == "cuda")
    from pipeline.engine import Engine

    with one_rank_group(device):
        torch.manual_seed(seed)
        model = build_model(cfg, device)
        engine = Engine(model, cfg, distributed=cfg.deepspeed.enabled)
        adapter = model.adapter
        prompts = [adapter.prepare([it.load_image() for it in items[i: i + batch_size]],
                                   [it.prompt for it in items[i: i + batch_size]])
                   for i in range(0, len(items), batch_size)]
        data = synthvqa_batches(adapter, cfg.train.micro_batch_size, steps * cfg.grad_accum, seed=0)
        vlm = model  # the engine updates the method's parameters in place (DeepSpeed keeps fp32 ones on CPU)
        yield {"step": 0, **evidence_recall(vlm, prompts, items)}
        losses: list[float] = []
        ks: list[float] = []
        gates: dict[str, list[float]] = {"g_selected": [], "g_rest": []}
        t0 = time.perf_counter()
        micro = 0
        for step in range(steps):
            done = False
            while not done:
                with engine.autocast(device):
                    out = engine.forward(data[micro], step)
                micro += 1
                engine.backward(out.loss)
                done = engine.step()
                losses.append(float(out.lm_loss))
                k = out.metrics.get("K")
                if isinstance(k, torch.Tensor):
                    ks.extend(k.detach().float().flatten().tolist())
                for key, values in gates.items():
                    if key in out.metrics:
                        values.append(float(out.metrics[key]))
            if (step + 1) % every == 0 or step + 1 == steps:
                yield {"step": step + 1, **evidence_recall(vlm, prompts, items),
                       "lm_loss": statistics.fmean(losses), "K_train": statistics.fmean(ks) if ks else float("nan"),
                       **{key: statistics.fmean(v) for key, v in gates.items() if v},
                       "seconds": time.perf_counter() - t0}
                losses, ks = [], []
                gates = {key: [] for key in gates}
