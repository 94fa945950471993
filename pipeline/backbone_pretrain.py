"""The backbone-pretraining loop, run by the single Ray Train worker of ``jobs/pretrain_backbone.py``.

This is a separate loop from :mod:`pipeline.train_loop`, which trains *pruning methods* on a frozen backbone;
this one trains the backbone itself, from scratch, in two stages (the feasibility note's recipe):

1. **vision**: vision tower + projector + objective heads under the dense per-patch objective and the CLS
   objective (:func:`stepprune.backbones.pretrain.steps.vision_step`), no language model;
2. **language**: projector + language model on packed multi-QA sequences with the per-patch objective as an
   auxiliary term (:func:`~stepprune.backbones.pretrain.steps.language_step`); the vision tower frozen unless
   ``stage2.train_vision``; during its first ``stage2.ground_steps`` steps a decaying grounding term tells one
   decoder layer where each question's evidence is (:func:`~stepprune.backbones.pretrain.steps.grounding_loss`).

Each stage follows its scene curriculum; images are generated fresh for every step (deterministic in seed,
stage, phase and step). Every ``loop.report_every`` steps the worker reports to Ray Train and logs to MLflow
(through :mod:`pipeline.tracking`); every ``loop.checkpoint_every`` steps and at the end of each stage the
report carries a resumable checkpoint (:mod:`pipeline.pretrain_state`), so a restarted worker or a re-run under
the same ``storage.name`` continues from the last one. The final report carries the ``save_pretrained`` folder.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch

from pipeline.config_loader import from_dict
from pipeline.pretrain_config import PretrainJobConfig, StageOptim
from pipeline.pretrain_state import load_optimizer, load_weights, save_state
from pipeline.tracking import MlflowTracker, NullTracker, Tracker
from stepprune.backbones.pretrain.batches import make_batch, to_device
from stepprune.backbones.pretrain.curriculum import Curriculum
from stepprune.backbones.pretrain.language_init import align_word_embeddings, mimetic_qk
from stepprune.backbones.pretrain.objectives import ClsHeads, PatchHeads, SlotWordsHead
from stepprune.backbones.pretrain.packing import QAPacker
from stepprune.backbones.pretrain.spec import build_backbone, save_backbone
from stepprune.backbones.pretrain.steps import StepOutput, language_step, vision_step
from stepprune.data.synthvqa.config import SynthVQAConfig

HF_DIR = "hf"  # the final checkpoint's save_pretrained folder
HEADS_FILE = "pretrain_heads.safetensors"
# The monitor asks a fixed number of questions per val image whatever data.questions_per_image trains with, so
# recipes that pack more questions per image are compared on the same questions.
VAL_QUESTIONS_PER_IMAGE = 8


def load_heads(file: str | Path, heads: dict[str, torch.nn.Module]) -> None:
    """Loads the objective heads that the final checkpoint saves beside the model (:data:`HEADS_FILE`, keys
    ``"{head}.{parameter}"``) into ``heads`` (strict per head)."""
    from safetensors.torch import load_file

    saved = load_file(str(file))
    for name, head in heads.items():
        head.load_state_dict({k[len(name) + 1:]: v for k, v in saved.items() if k.startswith(name + ".")})


def make_heads(cfg: PretrainJobConfig, vocab: int) -> dict[str, torch.nn.Module]:
    """The objective heads of a recipe: ``patch`` and ``cls`` always, ``slot`` (the slot-words read-out over the
    ``vocab`` token ids) when ``stage2.slot_words_weight`` is on. Built in this order, so the always-present heads
    start from the same weights with or without it."""
    heads: dict[str, torch.nn.Module] = {"patch": PatchHeads(cfg.arch.text_hidden),
                                         "cls": ClsHeads(cfg.arch.vision_hidden)}
    if cfg.stage2.slot_words_weight > 0:
        heads["slot"] = SlotWordsHead(cfg.arch.text_hidden, vocab)
    return heads


def start_language_stage(model, heads: dict[str, torch.nn.Module], processor, cfg: PretrainJobConfig) -> None:
    """The language stage's starting point, applied once before its first step (not on a resume within it):
    ``stage2.init_words`` and ``stage2.init_qk`` (:mod:`stepprune.backbones.pretrain.language_init`)."""
    if cfg.stage2.init_words:
        align_word_embeddings(model, processor.tokenizer, heads["patch"])
    if cfg.stage2.init_qk == "mimetic":
        mimetic_qk(model)


def lr_factor(optim: StageOptim, step: int, total: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from 1 to ``min_lr_ratio`` at ``total``."""
    warm = min(1.0, (step + 1) / max(1, optim.warmup_steps))
    t = min(1.0, step / max(1, total))
    return warm * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def autocast(cfg: PretrainJobConfig, device: torch.device):
    """The forward passes' autocast context: bf16 when ``loop.precision`` says so, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.loop.precision == "bf16")


def stage_parameters(model, heads: dict[str, torch.nn.Module], stage: int, cfg: PretrainJobConfig
                     ) -> list[torch.nn.Parameter]:
    """Sets ``requires_grad`` for a stage and returns its trainable parameters, in a fixed order.

    Stage 1 trains the vision tower, the projector and the patch and CLS heads. Stage 2 trains the projector, the
    language model and its head, the per-patch head (when the auxiliary term is on), the slot-words head (when
    its term is on) and the vision tower only with ``stage2.train_vision``.
    """
    m = model.model
    for p in model.parameters():
        p.requires_grad_(False)
    for h in heads.values():
        h.requires_grad_(False)
    if stage == 1:
        parts = [m.vision_tower, m.multi_modal_projector, heads["patch"], heads["cls"]]
    else:
        parts = [m.multi_modal_projector, m.language_model, model.lm_head]
        if cfg.stage2.aux_weight > 0:
            parts.append(heads["patch"])
        if "slot" in heads:
            parts.append(heads["slot"])
        if cfg.stage2.train_vision:
            parts.append(m.vision_tower)
    params = []
    for part in parts:
        part.requires_grad_(True)
        params.extend(part.parameters())
    return params


def validation(model, heads, processor, packer, cfg: PretrainJobConfig, stage: int,
               device: torch.device) -> dict[str, float]:
    """Teacher-forced monitor on fixed val-split images (full 1-20-shape distribution).

    Stage 1: the per-patch and CLS accuracies. Stage 2: the share of questions whose every answer token is the
    argmax, per family and overall (close to, but not, the greedy-generation accuracy the card reports), and
    where the answer slot looks: ``evidence_mass`` (``stage2.ground_layer``, on the evidence) and ``query_mass``
    (layer 0, on the words the question names its object by).
    """
    n = cfg.loop.val_images
    gen = SynthVQAConfig(seed=cfg.data.seed, questions_per_image=VAL_QUESTIONS_PER_IMAGE)
    bs = cfg.stage1.batch_size if stage == 1 else cfg.stage2.batch_size
    sums: dict[str, list[float]] = defaultdict(list)
    answers: list[tuple[str, bool]] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, n, bs):
            images = [(gen, i) for i in range(start, min(n, start + bs))]
            batch = to_device(make_batch(images, processor, packer if stage == 2 else None, split="val"), device)
            with autocast(cfg, device):
                if stage == 1:
                    out = vision_step(model, heads["patch"], heads["cls"], batch)
                else:
                    out = language_step(model, None, batch, with_answers=True, measure_attention=True,
                                        ground_layer=cfg.stage2.ground_layer, query_heads=cfg.stage2.query_heads)
            answers.extend(out.answers)  # empty in stage 1
            for k, v in out.metrics.items():
                sums[k].append(v)
    model.train()
    metrics = {f"val.{k}": float(np.nanmean(v)) for k, v in sums.items()}
    if answers:
        by_family: dict[str, list[bool]] = defaultdict(list)
        for fam, ok in answers:
            by_family[fam].append(ok)
        metrics.update({f"val.exact.{f}": float(np.mean(v)) for f, v in sorted(by_family.items())})
        metrics["val.exact.overall"] = float(np.mean([ok for f, ok in answers if f != "describe"]))
    return metrics


def train_step(model, heads: dict[str, torch.nn.Module], processor, packer: QAPacker,
               optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], cfg: PretrainJobConfig,
               cur: Curriculum, stage: int, step: int, device: torch.device) -> tuple[StepOutput, float]:
    """One optimizer step of ``stage`` at curriculum step ``step``: the stage's learning-rate schedule, a fresh
    batch from the curriculum, the stage's forward pass (stage 2 with the decaying grounding weight), gradient
    clipping and the update.

    Returns:
        The step's output (loss and metrics) and the gradient norm before clipping.
    """
    optim_cfg = cfg.stage1.optim if stage == 1 else cfg.stage2.optim
    batch_size = cfg.stage1.batch_size if stage == 1 else cfg.stage2.batch_size
    for g in optimizer.param_groups:
        g["lr"] = optim_cfg.lr * lr_factor(optim_cfg, step, cur.total_steps)
    batch = to_device(make_batch(cur.images(step, batch_size), processor,
                                 packer if stage == 2 else None, families=cur.families_at(step)), device)
    with autocast(cfg, device):
        if stage == 1:
            out = vision_step(model, heads["patch"], heads["cls"], batch, cls_weight=cfg.stage1.cls_weight)
        else:
            s2 = cfg.stage2
            decay = max(0.0, 1.0 - step / max(1, s2.ground_steps))
            ground = s2.ground_weight * decay
            out = language_step(model, heads["patch"], batch, aux_weight=s2.aux_weight, ground_weight=ground,
                                ground_layer=s2.ground_layer, loss_per=s2.loss_per,
                                ground_referents=s2.ground_referents, ground_per_head=s2.ground_per_head,
                                query_weight=s2.query_weight * decay, query_heads=s2.query_heads,
                                slot_head=heads.get("slot"), slot_weight=s2.slot_words_weight * decay)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, optim_cfg.grad_clip)
    optimizer.step()
    return out, float(grad_norm)


def _report(metrics: dict[str, float], tracker: Tracker, step: int, checkpoint_fn=None) -> None:
    tracker.log_metrics(metrics, step=step)
    if checkpoint_fn is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint_fn(Path(tmp))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def pretrain_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config`` = {"job": PretrainJobConfig as a dict, "mlflow": {"uri", "run_id"}}."""
    cfg = from_dict(PretrainJobConfig, config["job"])
    if cfg.loop.threads:
        torch.set_num_threads(cfg.loop.threads)
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model, processor = build_backbone(cfg.arch, cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        heads = make_heads(cfg, model.config.text_config.vocab_size)
    model.to(device)
    for h in heads.values():
        h.to(device)
    packer = QAPacker(processor, cfg.arch.num_patches)
    mlflow = config.get("mlflow") or {}
    tracker: Tracker = MlflowTracker(mlflow["uri"], run_id=mlflow["run_id"]) if mlflow.get("run_id") \
        else NullTracker()

    state = {"stage": 1, "step": 0, "global_step": 0, "seconds": 0.0, "images": 0}
    resume_dir = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        resume_dir = Path(ckpt.to_directory())
        state = load_weights(resume_dir, model, heads)
        print(f"[pretrain] resumed at stage {state['stage']} step {state['step']}", flush=True)
    t_start = time.perf_counter() - state["seconds"]

    def write_checkpoint(folder: Path, optimizer, final: bool = False) -> None:
        st = dict(state, seconds=time.perf_counter() - t_start)
        save_state(folder, model, heads, optimizer, st)
        if final:
            model.eval()
            save_backbone(model, processor, folder / HF_DIR)
            from safetensors.torch import save_file

            save_file({f"{n}.{k}": v.detach().contiguous().cpu() for n, h in heads.items()
                       for k, v in h.state_dict().items()}, str(folder / HF_DIR / HEADS_FILE))

    stages = [(1, cfg.stage1.phases, cfg.stage1.batch_size, cfg.stage1.optim),
              (2, cfg.stage2.phases, cfg.stage2.batch_size, cfg.stage2.optim)]
    offsets = {1: 0, 2: sum(p.steps for p in cfg.stage1.phases)}
    for stage, phases, batch_size, optim_cfg in stages:
        cur = Curriculum(phases, stage, seed=cfg.data.seed, questions_per_image=cfg.data.questions_per_image)
        if state["stage"] > stage or cur.total_steps == 0:
            continue
        params = stage_parameters(model, heads, stage, cfg)
        optimizer = torch.optim.AdamW(params, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas),
                                      weight_decay=optim_cfg.weight_decay)
        if resume_dir is not None and state["stage"] == stage and state["step"] > 0:
            load_optimizer(resume_dir, optimizer)
        state.update(stage=stage, step=state["step"] if state["stage"] == stage else 0)
        if stage == 2 and state["step"] == 0:
            start_language_stage(model, heads, processor, cfg)
        window: dict[str, list[float]] = defaultdict(list)
        t_window, images_window = time.perf_counter(), 0
        for step in range(state["step"], cur.total_steps):
            out, grad_norm = train_step(model, heads, processor, packer, optimizer, params, cfg, cur, stage, step,
                                        device)
            for k, v in out.metrics.items():
                window[k].append(v)
            window["grad_norm"].append(float(grad_norm))
            images_window += batch_size
            state.update(step=step + 1, global_step=offsets[stage] + step + 1, images=state["images"] + batch_size)
            last = step + 1 == cur.total_steps
            if (step + 1) % cfg.loop.report_every and not last:
                continue
            dt = time.perf_counter() - t_window
            metrics = {f"s{stage}.{k}": float(np.nanmean(v)) for k, v in window.items()}
            metrics.update({"lr": optimizer.param_groups[0]["lr"], "images_per_s": images_window / max(dt, 1e-9),
                            "stage": float(stage), "phase": float(cur.phase_at(step)),
                            "elapsed_min": (time.perf_counter() - t_start) / 60})
            window, t_window, images_window = defaultdict(list), time.perf_counter(), 0
            periodic = cfg.loop.val_every and (step + 1) % cfg.loop.val_every == 0
            if cfg.loop.val_images > 0 and (last or periodic):
                metrics.update(validation(model, heads, processor, packer, cfg, stage, device))
            shown = " ".join(f"{k}={v:.3g}" for k, v in metrics.items()
                             if k.split(".")[-1] in ("loss", "lm_loss", "acc_shape", "acc_word", "acc_answer_token",
                                                     "images_per_s", "overall", "acc_cls_count",
                                                     "evidence_mass"))
            print(f"[pretrain] stage {stage} step {step + 1}/{cur.total_steps} "
                  f"(global {state['global_step']}/{cfg.total_steps}, {metrics['elapsed_min']:.1f} min) {shown}",
                  flush=True)
            if last or state["global_step"] % cfg.loop.checkpoint_every == 0:
                if last:
                    state.update(stage=stage + 1, step=0)
                _report(metrics, tracker, state["global_step"],
                        lambda d, opt=(None if last else optimizer): write_checkpoint(d, opt))
            else:
                _report(metrics, tracker, state["global_step"])
    state["stage"] = 3
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(Path(tmp), None, final=True)
        summary = {"global_step": float(state["global_step"]), "images": float(state["images"]),
                   "train_seconds": time.perf_counter() - t_start}
        tracker.log_metrics(summary, step=state["global_step"])
        ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(tmp))
