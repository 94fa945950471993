"""The training job's config tree (typed dataclasses). Load it with :func:`pipeline.config_loader.load`.

Derived quantities (gradient accumulation, warm-up steps, the DeepSpeed JSON) are computed from these few dials in
one place each, never written twice: ``TrainJobConfig.grad_accum`` here and ``pipeline.engine`` for DeepSpeed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from stepprune.backbones.answer_loss import LossPer
from stepprune.methods import method_class


@dataclasses.dataclass
class BackboneConfig:
    """The frozen backbone: a local Hugging Face folder (``save_pretrained`` layout)."""

    path: str = "checkpoints/synthvqa-llava-tiny"
    dtype: str = "auto"  # "auto" = float32 on CPU, bfloat16 on GPU
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    trust_remote_code: bool = False


@dataclasses.dataclass
class SynthVQAGenConfig:
    """Generate the SynthVQA corpus into ``DataConfig.root`` when it is missing (the embedded default)."""

    seed: int = 0
    n_train_images: int = 4000
    n_val_images: int = 300
    n_test_images: int = 600


@dataclasses.dataclass
class DataConfig:
    """The instruction corpus (LLaVA-Instruct JSON + image folder) and its packed Parquet shards.

    Attributes:
        corpus: the LLaVA-Instruct JSON file.
        image_folder: where its ``image`` paths are relative to.
        shards: the folder of Parquet shards written by ``jobs/prepare_data.py`` (and read for training).
        max_bad_records: corrupt images / malformed rows tolerated (counted, logged, skipped); one more fails the job.
        max_samples: use only the first N conversations (None = all).
        rows_per_shard: about this many Parquet rows per output file (the corpus is split into runs of this length).
        preprocess_batch_size: rows per ``map_batches`` call when decoding and tokenising.
        shuffle_seed: the shards hold the corpus in this seed's random row order, and training reads their blocks
            in a random order from the same seed; both deterministic, so a resumed run sees the same stream.
        split_turns: pack each question-answer pair of a multi-turn conversation as a sample of its own, so the
            selector reads one question per sample, as at evaluation (:func:`pipeline.data.single_turn_records`).
            Off by default: the spec conditions a multi-turn sample's selection on all its questions.
        synthvqa: when set and ``corpus`` is missing, generate SynthVQA first (the embedded default).
    """

    corpus: str = "data/synthvqa/llava_instruct/synthvqa_train.json"
    image_folder: str = "data/synthvqa/llava_instruct/images"
    shards: str = "data/synthvqa/shards/train"
    max_bad_records: int = 0
    max_samples: int | None = None
    rows_per_shard: int = 1000
    preprocess_batch_size: int = 16
    shuffle_seed: int = 0
    split_turns: bool = False
    synthvqa: SynthVQAGenConfig | None = None


@dataclasses.dataclass
class MethodSpec:
    """The trainable method and its own config (validated by the method's config class)."""

    name: str = "stepprune"
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        cls = method_class(self.name)
        if cls.training_free:
            raise ValueError(f"method {self.name!r} is training-free; the training job needs a trainable method")
        cls.config_class.from_dict(self.config)  # unknown or invalid keys fail at load time


@dataclasses.dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay from ``lr`` to ``min_lr``."""

    lr: float = 2e-4
    min_lr: float = 2e-6
    weight_decay: float = 0.01
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.03
    grad_clip: float = 1.0


@dataclasses.dataclass
class WarmStartConfig:
    """A label-free warm start of the selector, run by the training job before its LM-loss steps (not in the spec).

    The frozen LM's own answer-NLL gradient on a uniform attention gate (:func:`stepprune.gate_saliency.
    gate_saliency`) names each training question's ``teacher_k`` most useful patches; the selector's encoder and
    first pointer step learn to predict them from the image and the question alone (L_ev, AdamW), then the LM loss
    trains the whole selector as the spec says (:mod:`pipeline.evidence_warm_start`). It reads no label the LM loss
    does not: the answer is the LM loss's own target. Why it exists: on the embedded backbone the spec's LM loss
    from scratch never made the selection read the question, while the same LM's gradient at a uniform gate points
    at the asked-about object. Measured there (``docs/results/selector_training.md``, 480 validation questions):
    the distilled selector alone beats random at K 64 (55.4 % against 48.4 %); 100 LM-loss steps of the embedded
    default after it end at or below random's level (45.5 % against 48.3 % at K 69; as this stage, 41.6 % against
    49.8 % at K 75; 960 questions) when they train the whole selector. The embedded config (``jobs/configs/
    embedded.yaml``) runs it and then trains only the stop (``trainable``): 47.3 % against random's 44.7 % at K 44.
    None (off) in this dataclass's default and in the sweeps' trials.

    It runs once, in the job's driver (single process, CPU threads), and writes ``<run>/warm_start/selector``,
    which the run then starts from as it would from ``train.init_selector``; a resumed run reuses that folder.
    For a 7B backbone run ``jobs/warm_start_selector.py`` on a GPU node instead and pass ``train.init_selector``.

    Attributes:
        folder: a SynthVQA native split whose questions (with their answers) it learns from: the training split.
        items: questions read from ``folder``.
        steps, batch_size, lr: AdamW steps, questions per step, learning rate.
        teacher_k: patches per question the teacher names.
        threads: torch threads of the driver while it runs (None: torch's default).
    """

    folder: str = "data/synthvqa/native/train"
    items: int = 4000
    steps: int = 150
    batch_size: int = 8
    lr: float = 1e-3
    teacher_k: int = 64
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.teacher_k < 1 or self.items < 1:
            raise ValueError("train.warm_start: steps, batch_size, teacher_k and items must be >= 1")


# Dotted overrides that turn the embedded config's two stages (warm start, then stop-only LM steps) back into the
# spec's single stage, where the LM loss trains the whole selector from its initialisation. The single-process
# benches that measure that LM-loss path put them before the user's overrides.
SPEC_SINGLE_STAGE = ["train.warm_start=null", "train.trainable=null"]


@dataclasses.dataclass
class TrainConfig:
    """Steps, batch sizes and reporting.

    Attributes:
        global_batch_size: samples per optimizer step over all workers.
        micro_batch_size: samples per forward pass on one worker.
        max_steps: optimizer steps.
        report_every: steps between metric reports (rank 0 logs them).
        checkpoint_every: steps between checkpoints (each report at such a step carries one).
        fail_at_step: fault injection for tests: rank ``fail_rank`` dies (SIGKILL) once, at this step.
        loss_per: how the answer NLL is averaged: ``"token"`` over every answer token of the batch (LLaVA's
            convention), ``"question"`` within each answer first, then over answers, so that SynthVQA's few long
            descriptions (48 % of its answer tokens, 2.9 % of its questions) do not carry half the gradient.
        init_selector: a selector checkpoint folder (``stepprune.save_checkpoint``) whose weights the run starts
            from instead of the method's initialisation, e.g. to fine-tune a trained selector or the evidence
            warm start of ``jobs/warm_start_selector.py``. Same method and architecture; a resumed run's own
            checkpoint takes precedence.
        warm_start: run the label-free warm start (:class:`WarmStartConfig`) first and start from it (None: off;
            exclusive with ``init_selector``).
        trainable: the method's parameters the LM-loss steps train, as name prefixes (``"decoder.stop"`` is
            StepPrune's stop embedding e_STOP, ``"denoiser"`` its training-path denoiser); the rest stay as
            initialised or loaded (None: all). Meant for a start from ``warm_start`` or ``init_selector``: with
            every parameter but e_STOP frozen, the pointer's order of picks is the start's and the LM loss with
            the length term learns only where to stop.
    """

    global_batch_size: int = 32
    micro_batch_size: int = 4
    max_steps: int = 200
    report_every: int = 10
    checkpoint_every: int = 50
    num_to_keep: int = 2
    seed: int = 0
    threads_per_worker: int | None = None
    fail_at_step: int | None = None
    fail_rank: int = 0
    loss_per: LossPer = "token"
    init_selector: str | None = None
    warm_start: WarmStartConfig | None = None
    trainable: list[str] | None = None

    def __post_init__(self) -> None:
        if self.trainable is not None and (not self.trainable or not all(p.strip() for p in self.trainable)):
            raise ValueError("train.trainable: a non-empty list of parameter-name prefixes (or null for all)")


@dataclasses.dataclass
class ScalingConfig:
    """Ray Train workers."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2


@dataclasses.dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO, derived into a DeepSpeed JSON by ``pipeline.engine``. Disabled = DDP."""

    enabled: bool = True
    zero_stage: Literal[0, 1, 2] = 2
    bf16: bool | None = None  # None = bf16 on GPU, fp32 on CPU
    offload_optimizer: bool = False


@dataclasses.dataclass
class TrackingConfig:
    """MLflow. ``uri`` None = a local sqlite store under the storage root; ``host`` is where the UI binds."""

    uri: str | None = None
    experiment: str = "stepprune"
    run_name: str | None = None


@dataclasses.dataclass
class StorageConfig:
    """Where runs live. Re-running with the same ``name`` resumes from its latest checkpoint. ``export`` names a
    folder that receives a copy of the final selector files."""

    root: str = "runs"
    name: str = "embedded"
    export: str | None = None  # also copy the final selector here (e.g. a checkpoints/ folder to commit)


@dataclasses.dataclass
class HeldOutEvalConfig:
    """The held-out check the training job prints: the trained selector against vanilla and random pruning."""

    enabled: bool = True
    folder: str = "data/synthvqa/native/val"
    max_items: int = 400
    batch_size: int = 16
    max_new_tokens: int = 8
    # Questions (the first of the same items) on which the summary also measures the train/inference gap: the
    # answer NLL under the method's training path against its inference path, random, vanilla and blind
    # (stepprune.train_gap). 0 skips it.
    gap_items: int = 240  # about 1 min on 2 CPU cores for the embedded default (58 s on an AMD EPYC)


@dataclasses.dataclass
class ValidationConfig:
    """Periodic validation inside training (rank 0): accuracy and mean K on held-out items, and the
    operating-point objective that sweeps optimise.

    ``objective = accuracy - k_weight * |mean K - target_k| / target_k`` (accuracy in [0, 1]); without a
    ``target_k`` the objective is the accuracy.
    """

    every: int | None = None  # optimizer steps between validations (None: only the held-out check at the end)
    folder: str = "data/synthvqa/native/val"
    benchmark: str = "synthvqa"
    max_items: int = 200
    batch_size: int = 16
    max_new_tokens: int = 8
    target_k: float | None = None
    k_weight: float = 1.0


@dataclasses.dataclass
class RayConfig:
    """How to reach Ray: ``address`` None starts a local instance (dashboard on 127.0.0.1)."""

    address: str | None = None
    num_cpus: int | None = None
    dashboard_host: str = "127.0.0.1"


@dataclasses.dataclass
class TrainJobConfig:
    """The whole training job."""

    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    method: MethodSpec = dataclasses.field(default_factory=MethodSpec)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    scaling: ScalingConfig = dataclasses.field(default_factory=ScalingConfig)
    deepspeed: DeepSpeedConfig = dataclasses.field(default_factory=DeepSpeedConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)
    eval: HeldOutEvalConfig = dataclasses.field(default_factory=HeldOutEvalConfig)
    validate: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        t = self.train
        per_step = t.micro_batch_size * self.scaling.num_workers
        if t.global_batch_size % per_step:
            raise ValueError(f"train.global_batch_size {t.global_batch_size} must be a multiple of "
                             f"micro_batch_size x num_workers = {per_step}")
        if t.max_steps < 1 or t.report_every < 1 or t.checkpoint_every < 1:
            raise ValueError("train.max_steps, report_every and checkpoint_every must be >= 1")
        if t.checkpoint_every % t.report_every:
            raise ValueError("train.checkpoint_every must be a multiple of train.report_every")
        if t.warm_start is not None and t.init_selector:
            raise ValueError("train.warm_start and train.init_selector both name the selector to start from; "
                             "set one (the embedded default runs the warm start: add train.warm_start=null to start "
                             "from train.init_selector instead)")
        if self.validate.every is not None and self.validate.every % t.report_every:
            raise ValueError("validate.every must be a multiple of train.report_every")

    @property
    def grad_accum(self) -> int:
        """Micro-batches per optimizer step on each worker."""
        return self.train.global_batch_size // (self.train.micro_batch_size * self.scaling.num_workers)

    @property
    def warmup_steps(self) -> int:
        return int(round(self.optim.warmup_ratio * self.train.max_steps))
