"""Pruning methods behind one interface, registered by name.

Example::

    from stepprune.methods import build_method, METHODS
    method = build_method("uniform", budget=64)
"""

from stepprune.methods import controls  # noqa: F401  (registers the controls)
from stepprune.methods import dart, fastv, pdrop, sparsevlm  # noqa: F401  (in-LLM baselines)
from stepprune.methods import holov, prumerge, prumerge_plus, visionzip  # noqa: F401  (pre-LLM baselines)
from stepprune.methods import dyrate, visionselector  # noqa: F401  (learned baselines)
from stepprune.methods.base import MethodConfig, PruningMethod, SelectionContext, TrainOutput
from stepprune.methods.registry import METHODS, UnknownMethodError, build_method, method_class, register

__all__ = [
    "METHODS",
    "MethodConfig",
    "PruningMethod",
    "SelectionContext",
    "TrainOutput",
    "UnknownMethodError",
    "build_method",
    "method_class",
    "register",
]
