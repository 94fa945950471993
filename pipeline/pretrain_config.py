"""The config tree of the backbone-pretraining job (``jobs/pretrain_backbone.py``) and of the backbone evaluation
job (``jobs/evaluate_backbone.py``). Load with :func:`pipeline.config_loader.load`.

The architecture (:class:`~stepprune.backbones.pretrain.spec.BackboneSpec`) and the curriculum phases
(:class:`~stepprune.backbones.pretrain.curriculum.Phase`) are the library's own dataclasses, used as config nodes
directly, so a field is defined once.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pipeline.config import RayConfig, ScalingConfig, StorageConfig, TrackingConfig
from stepprune.backbones.answer_loss import LossPer
from stepprune.backbones.pretrain.curriculum import Phase
from stepprune.backbones.pretrain.spec import BackboneSpec


@dataclasses.dataclass
class StageOptim:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.05
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.98])
    grad_clip: float = 1.0


@dataclasses.dataclass
class VisionStageConfig:
    """Stage 1: vision tower + projector under the per-patch and CLS objectives (no language model).

    Attributes:
        phases: the scene curriculum (steps and shape-count range per phase).
        batch_size: images per optimizer step.
        cls_weight: weight of the CLS (image-level) objective against the per-patch one.
    """

    phases: list[Phase] = dataclasses.field(default_factory=lambda: [Phase(80, 1, 6), Phase(320, 1, 20)])
    batch_size: int = 32
    cls_weight: float = 1.0
    optim: StageOptim = dataclasses.field(default_factory=lambda: StageOptim(lr=2e-3))


@dataclasses.dataclass
class LanguageStageConfig:
    """Stage 2: projector + language model on packed multi-QA sequences.

    Attributes:
        phases: the scene curriculum.
        batch_size: images per optimizer step (each image carries ``data.questions_per_image`` answers).
        aux_weight: weight of the per-patch objective on the projected tokens (keeps them decodable).
        train_vision: also train the vision tower (False: frozen after stage 1; cheaper, and its CLS attention
            stays what the CLS objective made it).
        ground_weight: initial weight of the grounding term (evidence mass of the answer slot's attention in
            ``ground_layer``; see :func:`stepprune.backbones.pretrain.steps.grounding_loss`).
        ground_steps: the grounding weight decays linearly to 0 over this many steps (then it is off).
        ground_layer: the decoder layer whose attention the grounding term supervises.
        ground_referents: question families whose grounding is per referent (head ``h`` of ``ground_layer`` on
            the question's ``h``-th referent) instead of the head average on the union of the evidence; for
            two-referent comparisons (``relation``, ``mc_mmbench`` spatial questions). Empty: the union term only.
        ground_per_head: ground every head of ``ground_layer`` on the evidence (mean of per-head ``-log`` masses)
            instead of the head average (``-log`` of the mean mass, which one head can satisfy alone).
        query_weight: initial weight of the query term (decaying with the grounding term's schedule): layer 0's
            answer slot told to read the words its question names the object by
            (:func:`stepprune.backbones.pretrain.steps.query_grounding_loss`); 0 = off.
        query_heads: the leading heads of layer 0 the query term supervises (0 = all).
        slot_words_weight: initial weight of the slot-words term (decaying with the grounding term's schedule):
            a read-out of the named words from each answer slot's state entering ``ground_layer``
            (:func:`stepprune.backbones.pretrain.steps.slot_words_loss`); 0 = off.
        loss_per: how the next-token loss is averaged: ``token`` (over all answer tokens of the batch) or
            ``question`` (within each packed question, then over questions). Why the choice: with ``token`` the
            rare long descriptions (about 2.5 % of the questions) carry 44-57 % of the answer tokens, so about
            half the gradient goes to the one family the overall score leaves out.
        init_words: at the start of the stage, point the LLM's input and output embeddings of every colour, shape,
            size and word name along the direction stage 1's per-patch head reads that class from
            (:func:`stepprune.backbones.pretrain.language_init.align_word_embeddings`).
        init_qk: ``random`` (the init's), or ``mimetic``: every key projection starts equal to its query
            projection (:func:`stepprune.backbones.pretrain.language_init.mimetic_qk`).
    """

    phases: list[Phase] = dataclasses.field(
        default_factory=lambda: [Phase(150, 1, 5), Phase(200, 1, 12), Phase(550, 1, 20)])
    batch_size: int = 16
    aux_weight: float = 0.2
    train_vision: bool = False
    ground_weight: float = 1.0
    ground_steps: int = 300
    ground_layer: int = 1
    ground_referents: list[str] = dataclasses.field(default_factory=list)
    ground_per_head: bool = False
    query_weight: float = 0.0
    query_heads: int = 0
    slot_words_weight: float = 0.0
    loss_per: LossPer = "token"
    init_words: bool = False
    init_qk: Literal["random", "mimetic"] = "random"
    optim: StageOptim = dataclasses.field(default_factory=StageOptim)


@dataclasses.dataclass
class PretrainDataConfig:
    """The SynthVQA generator the training images are drawn from (train split, fresh images every step)."""

    seed: int = 0
    questions_per_image: int = 8


@dataclasses.dataclass
class PretrainLoopConfig:
    """Reporting, checkpointing and threads of the training worker.

    Attributes:
        report_every: optimizer steps between metric reports (MLflow + progress line).
        checkpoint_every: optimizer steps between resumable checkpoints (a multiple of ``report_every``).
        val_images: val-split images of the teacher-forced monitor run at the end of each stage (0 = off).
        val_every: also run it every this many steps of a stage (None = only at stage ends; a multiple of
            ``report_every``).
        threads: torch threads of the worker (None = torch's default).
        precision: ``fp32``, or ``bf16``: forward passes under bf16 autocast with fp32 weights and optimizer
            state (CPU and GPU). Why: on CPUs with AMX/AVX512-BF16 it makes the stage-2 step about 1.5x faster
            (measured 2.5 s -> 1.7 s per 16-image step on this machine's Xeon), so the 2-hour recipe fits
            more steps.
    """

    report_every: int = 25
    checkpoint_every: int = 100
    num_to_keep: int = 2
    val_images: int = 64
    val_every: int | None = None
    threads: int | None = 2
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclasses.dataclass
class BackboneEvalSpec:
    """The measurement: greedy answers of ``methods`` on a native SynthVQA split, scored per family.

    Attributes:
        folder: the SynthVQA output folder (``native/<split>/``); generated when missing.
        split: the split to score.
        seed: generator seed when generating.
        n_images: images of that split when generating (8 questions each).
        methods: the methods to run (training-free, no budget: ``vanilla``, ``blind``).
        batch_size: questions per generate call.
        max_new_tokens: generation cap.
        flavour: scoring flavour of the mirrored benchmark rules.
        limit: score only the first N questions (None = all).
    """

    folder: str = "data/backbone_eval/synthvqa"
    split: Literal["train", "val", "test"] = "test"
    seed: int = 0
    n_images: int = 300
    methods: list[str] = dataclasses.field(default_factory=lambda: ["vanilla", "blind"])
    batch_size: int = 32
    max_new_tokens: int = 16
    flavour: Literal["llava", "lmms"] = "llava"
    limit: int | None = None


@dataclasses.dataclass
class PretrainJobConfig:
    """The whole backbone-pretraining job.

    Attributes:
        output: where the finished ``save_pretrained`` folder (and its ``MODEL_CARD.md``) goes.
        seed: initialisation seed.
        arch: the architecture.
        evaluate: measure the finished backbone and write the card's table (False: card without numbers).
    """

    output: str = "checkpoints/synthvqa-llava-tiny"
    seed: int = 0
    arch: BackboneSpec = dataclasses.field(default_factory=BackboneSpec)
    data: PretrainDataConfig = dataclasses.field(default_factory=PretrainDataConfig)
    stage1: VisionStageConfig = dataclasses.field(default_factory=VisionStageConfig)
    stage2: LanguageStageConfig = dataclasses.field(default_factory=LanguageStageConfig)
    loop: PretrainLoopConfig = dataclasses.field(default_factory=PretrainLoopConfig)
    scaling: ScalingConfig = dataclasses.field(default_factory=lambda: ScalingConfig(cpus_per_worker=2.0))
    tracking: TrackingConfig = dataclasses.field(default_factory=lambda: TrackingConfig(experiment="backbone"))
    storage: StorageConfig = dataclasses.field(default_factory=lambda: StorageConfig(name="pretrain-backbone"))
    eval: BackboneEvalSpec = dataclasses.field(default_factory=BackboneEvalSpec)
    evaluate: bool = True
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        from stepprune.data.synthvqa.config import check_families
        from stepprune.data.synthvqa.vocab import IMAGE_SIZE, PATCH_SIZE

        if (self.arch.image_size, self.arch.patch_size) != (IMAGE_SIZE, PATCH_SIZE):
            raise ValueError(f"arch: SynthVQA images are {IMAGE_SIZE} px with {PATCH_SIZE} px patch labels; got "
                             f"image_size {self.arch.image_size}, patch_size {self.arch.patch_size}")
        if self.scaling.num_workers != 1:
            raise ValueError("backbone pretraining runs on exactly one Ray Train worker (scaling.num_workers=1)")
        lp = self.loop
        if lp.report_every < 1 or lp.checkpoint_every < 1 or lp.checkpoint_every % lp.report_every:
            raise ValueError("loop.checkpoint_every must be a positive multiple of loop.report_every")
        if lp.val_every is not None and (lp.val_every < 1 or lp.val_every % lp.report_every):
            raise ValueError("loop.val_every must be a positive multiple of loop.report_every")
        if not 0 <= self.stage2.ground_layer < self.arch.text_layers:
            raise ValueError(f"stage2.ground_layer must be a decoder layer (0..{self.arch.text_layers - 1})")
        check_families(self.stage2.ground_referents, "stage2.ground_referents")
        if not 0 <= self.stage2.query_heads <= self.arch.text_heads:
            raise ValueError(f"stage2.query_heads must be in 0..{self.arch.text_heads} (0 = all heads)")
        if self.stage2.slot_words_weight < 0:
            raise ValueError("stage2.slot_words_weight must be >= 0")
        if self.stage1.batch_size < 1 or self.stage2.batch_size < 1:
            raise ValueError("stage batch sizes must be >= 1")
        if sum(p.steps for p in self.stage1.phases) + sum(p.steps for p in self.stage2.phases) < 1:
            raise ValueError("the stages have no steps")

    @property
    def total_steps(self) -> int:
        """Optimizer steps over both stages."""
        return sum(p.steps for p in self.stage1.phases) + sum(p.steps for p in self.stage2.phases)


@dataclasses.dataclass
class EvaluateBackboneConfig:
    """``jobs/evaluate_backbone.py``: the per-family table of a backbone folder."""

    backbone: str = "checkpoints/synthvqa-llava-tiny"
    eval: BackboneEvalSpec = dataclasses.field(default_factory=BackboneEvalSpec)
    threads: int | None = 2
    output: str | None = None  # also write the results as JSON here
