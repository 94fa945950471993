"""A quick probe of a backbone-pretraining recipe's language stage: a fresh LLM on a saved backbone's vision side.

Stage 1 (vision tower + projector) takes about a third of ``jobs/pretrain_backbone.py``; recipe work on the language
stage need not repeat it. This bench builds the recipe's backbone (``--config`` plus dotted overrides), copies
the vision tower, projector and per-patch heads of ``--init`` (a saved SynthVQA backbone with its
``pretrain_heads.safetensors``, the committed one by default), and trains stage 2 alone, its curriculum phases
and grounding steps scaled to ``--steps`` in proportion, with the job's own step (``pipeline.backbone_pretrain``),
in one process, no Ray, no MLflow. It prints the training metrics every 25 steps and the job's teacher-forced
validation (exact match per family on the fixed val images) every ``--val-every`` steps and at the end.

Arms compare at equal steps from the same ``--init``, seed and batches; the projector starts from ``--init``'s
(already adapted to its own LLM), so a probe ranks language-stage recipes, not the full job's accuracy.

    python jobs/bench_stage2_recipe.py --steps 500 --threads 1                              # the committed recipe
    python jobs/bench_stage2_recipe.py --steps 500 --threads 1 stage2.ground_layer=2
    python jobs/bench_stage2_recipe.py --steps 500 --threads 1 --rope-theta 1e6
    python jobs/bench_stage2_recipe.py --steps 500 --threads 1 stage2.init_words=true stage2.init_qk=mimetic
"""

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import COMMITTED_BACKBONE, REPO  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "jobs" / "configs" / "pretrain_backbone.yaml"))
    parser.add_argument("--init", default=str(COMMITTED_BACKBONE),
                        help="saved backbone whose vision tower, projector and per-patch heads start the probe")
    parser.add_argument("--steps", type=int, default=500,
                        help="stage-2 steps (the recipe's phases scaled to it); 0: only the validation")
    parser.add_argument("--keep-llm", action="store_true",
                        help="start from --init's language model too (continue it) instead of a fresh one")
    parser.add_argument("--val-every", type=int, default=200)
    parser.add_argument("--rope-theta", type=float, default=None, help="the LLM's RoPE base (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", default=None, help="save the probed backbone here (save_pretrained)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of --config, e.g. stage2.ground_layer=2")
    args = parser.parse_args(argv)
    from pipeline.backbone_pretrain import (HEADS_FILE, load_heads, make_heads, stage_parameters, start_language_stage,
                                           train_step, validation)

    heads_file = Path(args.init) / HEADS_FILE
    if not heads_file.is_file():
        parser.exit(2, f"{args.init} has no {HEADS_FILE}: --init must be a backbone saved by "
                       "jobs/pretrain_backbone.py\n")
    import numpy as np
    import torch
    from transformers import LlavaForConditionalGeneration

    from pipeline.config_loader import load
    from pipeline.pretrain_config import PretrainJobConfig
    from stepprune.backbones.pretrain.curriculum import Curriculum
    from stepprune.backbones.pretrain.packing import QAPacker
    from stepprune.backbones.pretrain.spec import build_backbone

    torch.set_num_threads(args.threads)
    cfg = load(PretrainJobConfig, args.config, args.overrides)
    s2 = cfg.stage2
    scale = args.steps / sum(p.steps for p in s2.phases)
    phases = [dataclasses.replace(p, steps=max(1, round(p.steps * scale))) for p in s2.phases] if args.steps else []
    cfg = dataclasses.replace(cfg, stage2=dataclasses.replace(
        s2, phases=phases, ground_steps=round(s2.ground_steps * scale)))
    text = {"rope_parameters": {"rope_theta": args.rope_theta, "rope_type": "default"}} if args.rope_theta else None
    model, processor = build_backbone(cfg.arch, cfg.seed, text_overrides=text)
    saved = LlavaForConditionalGeneration.from_pretrained(args.init).state_dict()
    current = model.state_dict()
    if args.keep_llm:
        if set(saved) != set(current) or any(v.shape != current[k].shape for k, v in saved.items()):
            parser.exit(2, f"{args.init} does not match the recipe's arch\n")
        model.load_state_dict(saved)
    else:
        vision = {k: v for k, v in saved.items() if ".vision_tower." in k or ".multi_modal_projector." in k}
        expected = {k for k in current if ".vision_tower." in k or ".multi_modal_projector." in k}
        if set(vision) != expected:
            parser.exit(2, f"{args.init}'s vision tower and projector do not match the recipe's arch\n")
        model.load_state_dict(vision, strict=False)
    heads = make_heads(cfg, model.config.text_config.vocab_size)
    load_heads(heads_file, {k: heads[k] for k in ("patch", "cls")})  # a fresh slot-words head when it is on
    if not args.keep_llm:
        start_language_stage(model, heads, processor, cfg)
    model.train()
    device = torch.device("cpu")
    packer = QAPacker(processor, cfg.arch.num_patches)

    def validate(step: int) -> None:
        val = validation(model, heads, processor, packer, cfg, 2, device)
        shown = {k.removeprefix("val.exact."): round(100 * v, 1) for k, v in val.items() if k.startswith("val.exact.")}
        shown.update({k.removeprefix("val."): round(val[k], 3) for k in ("val.evidence_mass", "val.query_mass")})
        print(f"[probe] val step {step} {json.dumps(shown)}", flush=True)

    if not phases:  # --steps 0: where the --init model stands
        print(f"[probe] {args.init}, no training", flush=True)
        validate(0)
        return
    cur = Curriculum(phases, 2, seed=cfg.data.seed, questions_per_image=cfg.data.questions_per_image)
    params = stage_parameters(model, heads, 2, cfg)
    o = s2.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    print(f"[probe] {args.config} {' '.join(args.overrides)} rope_theta="
          f"{model.config.text_config.rope_parameters['rope_theta']:g}: stage 2 in {cur.total_steps} steps "
          f"({[p.steps for p in phases]}), grounding over {cfg.stage2.ground_steps}, from {args.init}"
          f"{' (its language model too)' if args.keep_llm else ''}", flush=True)

    t0, window = time.perf_counter(), defaultdict(list)
    for step in range(cur.total_steps):
        out, grad_norm = train_step(model, heads, processor, packer, optimizer, params, cfg, cur, 2, step, device)
        for k, v in out.metrics.items():
            window[k].append(v)
        last = step + 1 == cur.total_steps
        if (step + 1) % 25 == 0 or last:
            shown = {k: round(float(np.nanmean(v)), 3) for k, v in window.items()}
            print(f"[probe] step {step + 1} {(time.perf_counter() - t0) / 60:.1f} min {json.dumps(shown)}", flush=True)
            window = defaultdict(list)
        if (step + 1) % args.val_every == 0 or last:
            validate(step + 1)
    if args.save:
        model.eval()
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)


if __name__ == "__main__":
    main()
