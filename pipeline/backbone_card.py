"""The model card of the pretrained SynthVQA backbone (``MODEL_CARD.md`` in its folder), written by the
pretraining job from what it measured: how it was made (command, seed, data sizes, wall time, hardware,
versions), the architecture, and the per-family table of ``vanilla`` and ``blind`` on the test split.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from pipeline.backbone_eval import family_table
from pipeline.pretrain_config import PretrainJobConfig


def hardware() -> str:
    """One line: CPU model, cores, and the GPU when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - the card must be written whatever the probe does
        pass
    return text


def _phases(phases) -> str:
    return ", ".join(f"{p.steps} steps x {p.min_objects}-{p.max_objects} shapes"
                     + (f" asked only {' / '.join(p.families)} questions" if p.families else "")
                     + (" drawing only " + " / ".join(f"{k} ({v:g})" for k, v in p.family_weights.items() if v > 0)
                        + " questions" if p.family_weights else "") for p in phases)


def render_card(cfg: PretrainJobConfig, facts: dict[str, Any]) -> str:
    """The card's markdown.

    Args:
        cfg: the resolved job config.
        facts: ``command``, ``config_hash``, ``params`` (per part), ``safetensors_mb``, ``train_seconds``,
            ``job_seconds``, ``hardware``, ``versions``, ``images`` (stage -> images seen), ``val`` (last
            monitor metrics), ``report`` (:func:`pipeline.backbone_eval.evaluate_backbone`'s, or None),
            ``eval_command``, ``mlflow`` (uri and run id), ``config`` (the YAML file).
    """
    a, s1, s2 = cfg.arch, cfg.stage1, cfg.stage2
    p = facts["params"]
    n1 = s1.batch_size * sum(ph.steps for ph in s1.phases)
    n2 = s2.batch_size * sum(ph.steps for ph in s2.phases)
    report = facts.get("report")
    lines = [
        "# synthvqa-llava-tiny",
        "",
        "A LLaVA-1.5-shaped `LlavaForConditionalGeneration` pretrained from scratch on SynthVQA: the embedded",
        "default backbone of StepPrune (every embedded-default job and every SynthVQA pruning experiment runs on",
        "it). 192 px images in 8 px patches give **576 patch tokens** (+ CLS); the LLM reads the penultimate",
        "vision layer (`vision_feature_layer=-2`) with CLS dropped (`vision_feature_select_strategy=\"default\"`),",
        "through the LLaVA chat template (`USER: <image>\\n{prompt} ASSISTANT:`).",
        "",
        "```python",
        "import stepprune",
        "adapter = stepprune.load_backbone(\"checkpoints/synthvqa-llava-tiny\")",
        "```",
        "",
        "## Architecture",
        "",
        "| part | shape | parameters |",
        "|---|---|---:|",
        f"| vision tower (CLIP) | {a.image_size} px, patch {a.patch_size}, width {a.vision_hidden}, "
        f"{a.vision_layers} layers, {a.vision_heads} heads, MLP {a.vision_intermediate} | {p['vision']:,} |",
        f"| projector | 2-layer GELU MLP {a.vision_hidden} -> {a.text_hidden} -> {a.text_hidden} | "
        f"{p['projector']:,} |",
        f"| language model (LLaMA) | width {a.text_hidden}, {a.text_layers} layers, {a.text_heads} heads, MLP "
        f"{a.text_intermediate}, vocab {facts.get('vocab', '?')} | {p['language'] + p['lm_head']:,} |",
        f"| **total** | `model.safetensors` {facts['safetensors_mb']:.1f} MB (fp32) | **{p['total']:,}** |",
        "",
        "Tokenizer: byte-level BPE trained offline on SynthVQA's vocabulary and prompt templates (every color,",
        "shape, size, word, number and option letter is one token). Processor: `CLIPImageProcessorPil`.",
        "The last vision layer feeds only CLS (the LLM reads layer -2), as in CLIP/LLaVA.",
        "",
        "## How it was made",
        "",
        "```bash",
        facts["command"],
        "```",
        "",
        f"* Config: `{facts.get('config', 'jobs/configs/pretrain_backbone.yaml')}` (resolved config hash "
        f"`{facts['config_hash']}`), "
        f"init seed {cfg.seed}, SynthVQA generator seed {cfg.data.seed} (train split; fresh images every "
        "step, never repeated).",
        f"* **Stage 1 — vision** ({n1:,} images: {_phases(s1.phases)}, batch {s1.batch_size}, AdamW lr "
        f"{s1.optim.lr:g}): vision tower + projector, no LLM. Dense per-patch objective on the projected visual "
        "tokens (linear heads): what lies under each patch — background / shape / word, its color, shape, size, "
        "word, a one-patch-per-shape anchor flag, and the owner's visible box — read off the generator's exact "
        "owner map (an element owns a patch when it covers >= 20 % of it, the evidence rule). Image-level "
        "objective on CLIP's pooled CLS: which of the 48 color-shape pairs are present and how many shapes "
        f"(weight {s1.cls_weight:g}); it makes the CLS attention that VisionZip / PruMerge / HoloV read "
        "concentrate on the objects.",
        f"* **Stage 2 — language** ({n2:,} images, up to {n2 * cfg.data.questions_per_image:,} question slots: "
        f"{_phases(s2.phases)}, batch {s2.batch_size}, AdamW lr {s2.optim.lr:g}): projector + LLM "
        f"(vision tower {'trained' if s2.train_vision else 'frozen'}) on packed multi-QA sequences — all of an "
        "image's questions after one image prefix, each segment attending to the image and to itself only, at "
        "its evaluation positions — with the per-patch objective as an auxiliary term "
        f"(weight {s2.aux_weight:g})"
        + (f" and, over its first {s2.ground_steps} steps, a grounding term (weight {s2.ground_weight:g} decaying "
           f"to 0: -log of the attention mass that decoder layer {s2.ground_layer}'s answer slot puts on the "
           "question's evidence patches"
           + (f"; for {', '.join(s2.ground_referents)} questions one head per referent, head h on the "
              "question's h-th referent alone" if s2.ground_referents else "")
           + ")" if s2.ground_weight > 0 and s2.ground_steps > 0 else "")
        + (f", and a slot-words term (weight {s2.slot_words_weight:g}, decaying with the grounding term: a linear "
           f"read-out of the answer slot's state entering decoder layer {s2.ground_layer} names the colour, shape, "
           "size and word names its question names the object by, so the lookup's query holds the description)"
           if s2.slot_words_weight > 0 else "")
        + ". Curriculum: sparse scenes first, the evaluation distribution last."
        + (" The next-token loss is averaged within each question, then over questions (every question weighs "
           "the same whatever its answer length)." if s2.loss_per == "question" else ""),
        f"* Wall time: **{facts['train_seconds'] / 60:.1f} min** pretraining (Ray Train, one worker), "
        f"{facts['job_seconds'] / 60:.1f} min for the whole job including the evaluation below.",
        f"* Hardware: {facts['hardware']}; {cfg.loop.threads or 'default'} torch threads; "
        + ("bf16 autocast forward passes, fp32 weights and optimizer." if cfg.loop.precision == "bf16" else "fp32."),
        f"* Software: {facts['versions']}.",
        f"* MLflow: run `{facts['mlflow']['run_id']}` in `{facts['mlflow']['uri']}`.",
    ]
    if facts.get("val"):
        v = facts["val"]
        fams = [k.split(".")[-1] for k in v if k.startswith("val.exact.") and not k.endswith("overall")]
        lines += ["", "Teacher-forced monitor at the end of stage 2 (val split, all answer tokens right): "
                  + ", ".join(f"{f} {100 * v[f'val.exact.{f}']:.1f}" for f in fams)
                  + f"; overall {100 * v.get('val.exact.overall', float('nan')):.1f} %."]
    lines += ["", "## Accuracy on the SynthVQA test split", ""]
    if report is None:
        lines.append("Not measured by this run (`evaluate=false`).")
    else:
        lines += [
            f"{report['questions']:,} questions on {report['images']} test images (generator seed "
            f"{cfg.eval.seed}, split `{cfg.eval.split}`), greedy decoding (max {cfg.eval.max_new_tokens} new "
            f"tokens), scored per family by the mirrored benchmark's official rule (flavour "
            f"`{cfg.eval.flavour}`) with `stepprune.evaluation.predict` and "
            "`stepprune.benchmarks.synthvqa.aggregate`. `blind` hands the LLM no visual token at all. "
            "Accuracy in %:",
            "",
            family_table(report),
            "",
            "Re-measure with:",
            "",
            "```bash",
            facts["eval_command"],
            "```",
        ]
    lines += [
        "",
        "## Limitations",
        "",
        "* Trained only on SynthVQA's synthetic shapes and words; it knows nothing else.",
        "* Tiny: it exists so that pruning methods can be compared on CPU in minutes, not to be a good VLM.",
        "",
    ]
    return "\n".join(lines)
