"""StepPrune: learned visual-token pruning for multimodal LLMs, as a pure PyTorch + transformers library.

This package never imports Ray, DeepSpeed or MLflow (a test enforces it); the distributed pipeline lives in
``pipeline/``. Public API:

* backbones: :func:`load_backbone`, :class:`BackboneAdapter` and the data types it passes around;
* methods: :func:`build_method`, :data:`METHODS`, :class:`PruningMethod`, :class:`MethodConfig`;
* :class:`PrunedVLM`, a backbone composed with one method.
"""

from stepprune.backbones import (
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

__version__ = "0.1.0"

__all__ = [
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
    "TrainOutput",
    "UnknownMethodError",
    "VisionFeatures",
    "VisualTokens",
    "build_method",
    "load_backbone",
    "method_class",
    "register",
]
