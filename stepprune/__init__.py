"""StepPrune: learned visual-token pruning for multimodal LLMs, as a pure PyTorch + transformers library.

This package never imports Ray, DeepSpeed or MLflow (a test enforces it); the distributed pipeline lives in
``pipeline/``. Public API:

* backbones: :func:`load_backbone`, :class:`BackboneAdapter` and the data types it passes around;
* methods: :func:`build_method`, :data:`METHODS`, :class:`PruningMethod`, :class:`MethodConfig`;
* :class:`PrunedVLM`, a backbone composed with one method;
* the StepPrune selector (method ``"stepprune"``) and its differentiable pieces: :func:`soft_topk` (Eq. 12),
  :func:`aggregate_scores` (Eq. 11), :func:`vp_noise_gate` (Eq. 13);
* :func:`save_checkpoint` / :func:`load_checkpoint` for any trainable method.
"""

from stepprune.backbones import (
    AttentionBias,
    BackboneAdapter,
    DecodeEvict,
    LayerEdit,
    LMInputs,
    PrefillDrop,
    PromptBatch,
    VisionFeatures,
    VisualTokens,
    load_backbone,
)
from stepprune.checkpoint import load_checkpoint, save_checkpoint
from stepprune.methods import (
    METHODS,
    MethodConfig,
    PruningMethod,
    SelectionContext,
    TrainOutput,
    UnknownMethodError,
    build_method,
    method_class,
    register,
)
from stepprune.pruned_vlm import PrunedGeneration, PrunedVLM
from stepprune.selector import StepPrune, StepPruneConfig, aggregate_scores, soft_topk, vp_noise_gate  # registers it

__version__ = "0.1.0"

__all__ = [
    "AttentionBias",
    "BackboneAdapter",
    "DecodeEvict",
    "LayerEdit",
    "LMInputs",
    "METHODS",
    "MethodConfig",
    "PrefillDrop",
    "PromptBatch",
    "PrunedGeneration",
    "PrunedVLM",
    "PruningMethod",
    "SelectionContext",
    "StepPrune",
    "StepPruneConfig",
    "TrainOutput",
    "UnknownMethodError",
    "VisionFeatures",
    "VisualTokens",
    "aggregate_scores",
    "build_method",
    "load_backbone",
    "load_checkpoint",
    "method_class",
    "register",
    "save_checkpoint",
    "soft_topk",
    "vp_noise_gate",
]
