"""One interface for every pruning method.

A method is an ``nn.Module`` (trainable methods hold parameters; training-free ones hold none) with a typed
config dataclass, and acts at up to three points:

* :meth:`PruningMethod.select` — **pre-LLM**: choose or merge visual tokens and hand them to the LLM in LLM space
  (default: keep all);
* :meth:`PruningMethod.llm_hooks` — **in-LLM**: :class:`~stepprune.backbones.hooks.PrefillDrop` hooks that drop
  tokens from the hidden states entering given decoder layers (default: none);
* :meth:`PruningMethod.decode_hooks` — **decode-time**: :class:`~stepprune.backbones.hooks.DecodeEvict` hooks that
  evict visual KV entries during generation (default: none).

Trainable methods also implement :meth:`PruningMethod.train_forward`, the differentiable training path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.hooks import AttentionBias, DecodeEvict, PrefillDrop
from stepprune.backbones.types import PromptBatch, VisionFeatures, VisualTokens


@dataclasses.dataclass
class MethodConfig:
    """Fields every method shares.

    Attributes:
        budget: retained visual tokens per image (LLaVA-1.5: 192 / 128 / 64 of 576).
        ratio: retained fraction of each image's visual tokens instead (Qwen2.5-VL, where N varies); the kept
            count is ``max(1, int(ratio * N))`` (floor, as VisionSelector's code does).
        positions: ``"original"`` keeps the kept tokens' position ids of the unpruned sequence (gaps);
            ``"contiguous"`` re-indexes the shortened sequence; ``None`` means the method's own default for the
            backbone family (:attr:`PruningMethod.default_positions`, resolved by
            :meth:`PruningMethod.position_mode_for`).
    """

    budget: int | None = None
    ratio: float | None = None
    positions: Literal["original", "contiguous"] | None = "original"

    def __post_init__(self) -> None:
        if self.budget is not None and self.ratio is not None:
            raise ValueError(f"{type(self).__name__}: give budget or ratio, not both")
        if self.budget is not None and (isinstance(self.budget, bool) or int(self.budget) != self.budget
                                        or self.budget < 1):
            raise ValueError(f"{type(self).__name__}: budget must be an integer >= 1, got {self.budget!r}")
        if self.ratio is not None and not 0.0 < float(self.ratio) <= 1.0:
            raise ValueError(f"{type(self).__name__}: ratio must be in (0, 1], got {self.ratio!r}")
        if self.positions is not None and self.positions not in ("original", "contiguous"):
            raise ValueError(f"{type(self).__name__}: positions must be 'original', 'contiguous' or None, "
                             f"got {self.positions!r}")

    def keep_count(self, n: int, sample: int = 0) -> int:
        """Tokens to keep out of ``n`` for one sample.

        Raises:
            ValueError: naming the sample when the budget exceeds its token count.
        """
        if self.budget is not None:
            if self.budget > n:
                raise ValueError(f"sample {sample}: budget {self.budget} exceeds its {n} visual tokens")
            return int(self.budget)
        if self.ratio is not None:
            return max(1, int(self.ratio * n))
        return n

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MethodConfig:
        """Builds the config from a mapping; unknown keys are an error naming the valid ones."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
        return cls(**values)


def family_default(value: Any, defaults: Mapping[str, Any], family: str, what: str) -> Any:
    """``value`` if it is set, else the backbone family's default from ``defaults``.

    Raises:
        ValueError: naming ``what`` when ``value`` is None and ``family`` has no default.
    """
    if value is not None:
        return value
    if family not in defaults:
        raise ValueError(f"{what}: no default for backbone family {family!r} (known: {sorted(defaults)}); "
                         "set it explicitly")
    return defaults[family]


@dataclasses.dataclass
class SelectionContext:
    """Everything a pre-LLM or in-LLM method may look at for one batch.

    Attributes:
        adapter: the frozen backbone (``project``, ``embed_text``, layer count, ...).
        prompt: the tokenised batch.
        vision: the vision tower's features.
    """

    adapter: BackboneAdapter
    prompt: PromptBatch
    vision: VisionFeatures

    @property
    def batch_size(self) -> int:
        return self.prompt.batch_size

    def projected(self) -> Tensor:
        """(B, N, D) every visual token in LLM space (computed once, cached)."""
        if not hasattr(self, "_projected"):
            self._projected = self.adapter.project(self.vision.tokens)
        return self._projected

    def question_embeds(self) -> tuple[Tensor, Tensor]:
        """The instruction tokens' frozen LLM embeddings, left-aligned: (B, Lq, D) and a (B, Lq) bool mask."""
        qmask = self.prompt.question_mask
        lengths = qmask.sum(dim=1)
        Lq = max(int(lengths.max()), 1)
        ids = torch.zeros(self.batch_size, Lq, dtype=torch.long, device=qmask.device)
        mask = torch.arange(Lq, device=qmask.device)[None] < lengths[:, None]
        for b in range(self.batch_size):
            ids[b, : int(lengths[b])] = self.prompt.input_ids[b][qmask[b]]
        return self.adapter.embed_text(ids), mask

    def sample_key(self, b: int) -> str:
        """A stable identifier of sample ``b`` (its key when the batch has keys, else its position)."""
        return self.prompt.keys[b] if self.prompt.keys is not None else str(b)


@dataclasses.dataclass
class TrainOutput:
    """What a trainable method's differentiable training path returns.

    Attributes:
        visual: the full-length (soft-gated) visual tokens the LLM sees during training.
        aux_loss: the method's own loss term(s) added to the LM loss (scalar).
        metrics: detached scalars/tensors for logging.
        biases: :class:`~stepprune.backbones.hooks.AttentionBias` hooks the training prefill applies (decode-time
            methods trained by teacher forcing: per-answer-position visibility of the visual tokens).
        finish: called once after that prefill, for terms the hooks computed inside the LLM pass; returns
            ``(extra_aux_loss, extra_metrics)``, added to ``aux_loss`` and ``metrics``.
    """

    visual: VisualTokens
    aux_loss: Tensor
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    biases: list[AttentionBias] = dataclasses.field(default_factory=list)
    finish: Callable[[], tuple[Tensor, dict[str, Any]]] | None = None


class PruningMethod(nn.Module):
    """Base class of every method. Subclasses set the class attributes and override the hooks they use.

    Class attributes:
        name: registry name.
        config_class: the typed config dataclass.
        hook_point: ``"none"``, ``"pre_llm"``, ``"in_llm"`` or ``"decode"`` (where it acts).
        uses_text: whether the selection looks at the prompt.
        training_free: whether it works without training.
        budgeted: whether it takes a retained-token budget.
        default_positions: the position convention per backbone family (``adapter.family``) used when the
            config leaves ``positions`` as None (e.g. pre-LLM methods that reorder or merge tokens: contiguous
            on LLaVA-1.5, original M-RoPE ids on Qwen2.5-VL, as their official code / ports do).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    hook_point: ClassVar[str] = "none"
    uses_text: ClassVar[bool] = False
    training_free: ClassVar[bool] = True
    budgeted: ClassVar[bool] = True
    default_positions: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: MethodConfig | Mapping[str, Any] | None = None):
        super().__init__()
        if config is None or isinstance(config, Mapping):
            config = self.config_class.from_dict(config)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    @property
    def position_mode(self) -> str | None:
        """The configured position convention (None: the per-family default, see :meth:`position_mode_for`)."""
        return self.config.positions

    def position_mode_for(self, family: str) -> str:
        """The position convention this method uses on a backbone family.

        Raises:
            ValueError: when the config leaves it to the method and the method has no default for ``family``.
        """
        if self.config.positions is not None:
            return self.config.positions
        return family_default(None, self.default_positions, family, f"{self.name}: positions")

    def select(self, ctx: SelectionContext) -> VisualTokens:
        """Pre-LLM selection or merging. Default: every visual token, in raster order."""
        return ctx.adapter.keep_all(ctx.vision)

    def llm_hooks(self, ctx: SelectionContext) -> list[PrefillDrop]:
        """In-LLM drop hooks for this batch. Default: none."""
        return []

    def decode_hooks(self, ctx: SelectionContext) -> list[DecodeEvict]:
        """Decode-time eviction hooks for this batch. Default: none."""
        return []

    def train_forward(self, ctx: SelectionContext, step: int) -> TrainOutput:
        """The differentiable training path (trainable methods only)."""
        raise NotImplementedError(f"{self.name} is training-free; it has no training path")

    def check_compatible(self, adapter: BackboneAdapter) -> None:
        """Raises ValueError naming the mismatch when this (configured or loaded) method cannot run on
        ``adapter``, e.g. a trained selector whose input widths differ from the backbone's. Default: no check."""

    def extra_repr(self) -> str:
        return repr(self.config)
