"""Runs the evidence-supervised warm start (:mod:`stepprune.selector.evidence_warm_start`) on the job's own model.

Ray-free and single-process: the job config's method is built exactly as the training job builds it
(:func:`pipeline.model.build_model`), trained with AdamW on L_ev over SynthVQA questions, and saved as a selector
checkpoint that ``train.init_selector`` (or any evaluation) can load.

Two teachers say which patches L_ev points at:

* ``"evidence"``: each question's evidence patches (SynthVQA's labels; real corpora have none);
* ``"saliency"``: label-free, the top ``teacher_k`` patches by the frozen LM's answer-NLL gradient on a uniform
  attention gate at 0.5 (:func:`stepprune.gate_saliency.gate_saliency`), computed from the question's answer as the
  LM loss is. The selector, which does not see the answer, learns to predict where that gradient points.

:func:`run_stage` is the training job's ``train.warm_start`` stage: the saliency warm start, trained once per run
before the LM-loss steps start from it.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.config import TrainJobConfig
from pipeline.model import build_model
from stepprune.backbones.types import VisionFeatures


TEACHERS = ("evidence", "saliency")
SALIENCY_G0 = 0.5  # the uniform gate the saliency is taken at (0.05 gave the same top-16 recall of the evidence)


def saliency_targets(adapter, images: Sequence[Any], items: Sequence[Any], k: int,
                     vision: VisionFeatures | None = None) -> list[list[int]]:
    """Per question, its top-``k`` visual patches by -dL/dg of its answer's NLL at a uniform attention gate.

    Args:
        adapter: the frozen backbone.
        images: the questions' images (PIL), in order.
        items: benchmark items with ``qid``, ``prompt`` and ``answer``.
        k: patches per question.
        vision: the tower's features of ``images`` when the caller has them; None runs it.
    """
    from stepprune.gate_saliency import gate_saliency
    from stepprune.train_gap import answer_conversations

    prompt = adapter.prepare_conversations(list(images), answer_conversations(items), keys=[it.qid for it in items])
    # (B, N); padding rows (variable-size images) at -inf, never picked over negative-saliency patches
    sal = gate_saliency(adapter, prompt, SALIENCY_G0, "attention", padding=float("-inf"), vision=vision)
    valid = torch.isfinite(sal).sum(1)
    return [sal[b].topk(min(k, int(valid[b]))).indices.sort().values.tolist() for b in range(len(items))]


def warm_start(cfg: TrainJobConfig, items: Sequence[Any], out: str | Path, *, steps: int, batch_size: int = 8,
               lr: float = 1e-3, seed: int = 0, teacher: str = "evidence", teacher_k: int = 16, log_every: int = 50,
               log: Callable[[str], None] = print,
               on_metrics: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Trains the job's selector on L_ev for ``steps`` AdamW steps and saves it to ``out``.

    Args:
        cfg: the job config (its method, backbone and ``train.loss_per`` are used; the selector is built as the
            training job builds it).
        items: questions with answers; the ``evidence`` teacher needs ``meta["evidence"]`` (evidence-less ones are
            skipped). ``describe`` questions (long captions) are skipped by both.
        out: the checkpoint folder to write.
        steps, batch_size, lr: AdamW steps, questions per step, learning rate.
        seed: initialisation and the order the questions are drawn in.
        teacher: ``"evidence"`` or ``"saliency"`` (module docstring).
        teacher_k: patches per question the saliency teacher points at.
        on_metrics: called at every log line with the step and ``{"L_ev", "teacher_recall"}`` (the latter where
            the questions record evidence), e.g. to log them to MLflow.

    Returns:
        The checkpoint folder. Each log line gives L_ev and, where the questions record evidence, the share of it
        the teacher's targets hold (``teacher recall``; 100 % for the evidence teacher).

    Raises:
        ValueError: an unknown teacher, no usable question, or the method has no pointer to supervise.
    """
    from stepprune.checkpoint import save_checkpoint
    from stepprune.selector.evidence_warm_start import evidence_loss, first_step_logits

    if teacher not in TEACHERS:
        raise ValueError(f"warm start: teacher must be one of {TEACHERS}, got {teacher!r}")
    pool = [it for it in items if (teacher == "saliency" or it.meta.get("evidence"))
            and it.meta.get("family") != "describe"]
    if not pool:
        raise ValueError("evidence warm start: no question records evidence (meta['evidence']): use SynthVQA"
                         if teacher == "evidence" else "warm start: no question to learn from")
    torch.manual_seed(seed)
    # ``train.trainable`` restricts the LM-loss steps after this stage; the warm start trains what L_ev reaches.
    model = build_model(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, trainable=None)),
                        torch.device("cpu"))
    adapter, method = model.adapter, model.method
    if not hasattr(method, "decoder"):
        raise ValueError(f"evidence warm start: {method.name} has no pointer decoder to supervise (StepPrune only)")
    method.train()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(seed)
    images: dict[str, Any] = {}
    # A question's saliency targets depend on the frozen backbone and the question alone, not on the selector: a
    # question drawn again reuses them (300 steps of 8 from the embedded default's 3,886: a quarter of the draws).
    teacher_cache: dict[str, list[int]] = {}
    t0, recent, held = time.perf_counter(), [], []
    for step in range(steps):
        batch = rng.sample(pool, min(batch_size, len(pool)))
        for it in batch:
            if it.qid not in images:
                images[it.qid] = it.load_image()
        pictures = [images[it.qid] for it in batch]
        prompt = adapter.prepare(pictures, [it.prompt for it in batch])
        with torch.no_grad():  # the frozen tower once per batch, for the teacher and the selector alike
            vision = adapter.vision_features(prompt)
        if teacher == "evidence":
            targets = [it.meta["evidence"] for it in batch]
        else:
            todo = [i for i, it in enumerate(batch) if it.qid not in teacher_cache]
            if todo:
                fresh = saliency_targets(adapter, [pictures[i] for i in todo], [batch[i] for i in todo],
                                         teacher_k, vision=vision.rows(todo))
                teacher_cache.update((batch[i].qid, t) for i, t in zip(todo, fresh))
            targets = [teacher_cache[it.qid] for it in batch]
        for t, it in zip(targets, batch):
            if evidence := set(it.meta.get("evidence") or ()):
                held.append(len(evidence & set(t)) / len(evidence))
        ctx = model.context(prompt, vision)
        loss = evidence_loss(first_step_logits(method, ctx), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            recall = f" teacher recall {100 * sum(held) / len(held):.1f} %" if held else ""
            log(f"[warm-start] step {step + 1}/{steps} L_ev {sum(recent) / len(recent):.3f}{recall} "
                f"({time.perf_counter() - t0:.0f} s)")
            if on_metrics is not None:
                on_metrics(step + 1, {"L_ev": sum(recent) / len(recent),
                                      **({"teacher_recall": sum(held) / len(held)} if held else {})})
            recent, held = [], []
    return save_checkpoint(method, out, adapter=adapter, step=steps)


def run_stage(cfg: TrainJobConfig, run_dir: str | Path, *, log: Callable[[str], None] = print,
              on_metrics: Callable[[int, dict[str, float]], None] | None = None) -> TrainJobConfig:
    """The training job's warm-start stage (``train.warm_start``): trains and saves the saliency warm start once,
    then returns the config the LM-loss steps run with (``init_selector`` at the saved folder, ``warm_start`` off).

    Args:
        cfg: the (absolutized) job config; returned unchanged when ``train.warm_start`` is None.
        run_dir: the run's folder; the selector goes to ``run_dir/warm_start/selector``. A folder saved by an
            earlier attempt of the same run is reused, so a resumed run does not train it again.
        log, on_metrics: progress lines and metrics, as for :func:`warm_start`.

    Raises:
        FileNotFoundError: ``train.warm_start.folder`` holds no SynthVQA questions.
    """
    ws = cfg.train.warm_start
    if ws is None:
        return cfg
    out = Path(run_dir) / "warm_start" / "selector"
    if (out / "meta.json").exists():
        log(f"[warm-start] reusing {out}")
    else:
        from stepprune.benchmarks import get_benchmark

        # The split folder itself, not the loader's fallbacks: given a folder of splits it would read "test".
        if not (Path(ws.folder) / "questions.jsonl").exists():
            raise FileNotFoundError(f"train.warm_start.folder={ws.folder}: no questions.jsonl (a SynthVQA native "
                                    "split, written with the corpus by the embedded default's data step)")
        items = get_benchmark("synthvqa").load(ws.folder, limit=ws.items)
        plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warm_start=None))
        threads = torch.get_num_threads()
        if ws.threads:
            torch.set_num_threads(ws.threads)
        partial = out.with_name(out.name + ".partial")  # a killed driver leaves no half-written selector behind
        shutil.rmtree(partial, ignore_errors=True)
        try:
            warm_start(plain, items, partial, steps=ws.steps, batch_size=ws.batch_size, lr=ws.lr,
                       seed=cfg.train.seed, teacher="saliency", teacher_k=ws.teacher_k, log=log,
                       on_metrics=on_metrics)
        finally:
            torch.set_num_threads(threads)
        partial.rename(out)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warm_start=None, init_selector=str(out)))
