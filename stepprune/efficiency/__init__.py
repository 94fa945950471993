"""Efficiency of pruned VLMs: FLOPs counted on the meta device at real model sizes, and measured latency.

Modules, one job each:

* :mod:`.backbones` — the public LLaVA-1.5-7B / Qwen2.5-VL-7B configs as meta-device or random-weight models
  behind their adapters (no download);
* :mod:`.scene` — shape-level meta inputs (:class:`MetaScene`): vision features, LLM states and prefill contexts at
  a given number of visual tokens;
* :mod:`.costs` — per-method cost descriptions (tokens entering each LLM layer, rows projected, the method's own
  work) and their registry;
* :mod:`.flops` — the counting (``FlopCounterMode``) of vision, projector, method and prefill;
* :mod:`.analytic` — the closed-form counts of stepprune.md Sec. 9.3 (the counter's cross-check);
* :mod:`.latency` — timing the first token per part for several methods in one run.

Example::

    from stepprune.efficiency import MetaScene, PromptShape, build_adapter, method_flops, real_config
    scene = MetaScene(build_adapter(real_config("llava15_7b")), PromptShape())
    method_flops(scene, stepprune.build_method("stepprune"), k=64).total / 1e12     # ~2.04 TFLOPs
"""

from stepprune.efficiency.backbones import REAL_CONFIGS, build_adapter, real_config
from stepprune.efficiency.costs import ADAPTIVE, COST_MODELS, Geometry, MethodCost, method_cost
from stepprune.efficiency.flops import FlopBreakdown, count_flops, method_flops, prefill_flops, vision_flops
from stepprune.efficiency.latency import PARTS, Latency, Stats, first_token, measure
from stepprune.efficiency.scene import MetaScene, PromptShape

__all__ = [
    "ADAPTIVE",
    "COST_MODELS",
    "FlopBreakdown",
    "Geometry",
    "Latency",
    "MetaScene",
    "MethodCost",
    "PARTS",
    "PromptShape",
    "REAL_CONFIGS",
    "Stats",
    "build_adapter",
    "count_flops",
    "first_token",
    "measure",
    "method_cost",
    "method_flops",
    "prefill_flops",
    "real_config",
    "vision_flops",
]
