"""The StepPrune selector (method ``stepprune``): a cross-modal encoder, a pointer decoder that picks visual tokens
one at a time and stops by itself, and the differentiable surrogate that trains it through the frozen LLM.

Modules, one job each:

* :mod:`.config` — :class:`StepPruneConfig` (widths, limits, knobs, schedules, ablation switches);
* :mod:`.encoder` — Eq. (3), the cross-modal input encoder;
* :mod:`.decoder` — Eqs. (4)-(8), memory with the stop slot, KV-cached pointer decoder, ST feedback;
* :mod:`.loop` — the batched selection loop shared by training and inference;
* :mod:`.scores` — Eqs. (10)-(11), alive probabilities and aggregated scores (Table 4b variants), K^;
* :mod:`.soft_topk` — Eq. (12), exact closed-form SoftTopK and the log-domain Sinkhorn reference;
* :mod:`.gate` — Eq. (13), the VP noise gate and its running-RMS noise scale;
* :mod:`.denoiser` — Eq. (14), the diagonal-masked denoiser as a per-token map;
* :mod:`.objective` — Eq. (15), the straight-through length term, k_bar, and the alpha/beta/lambda schedules;
* :mod:`.method` — the registered :class:`StepPrune` method (training and inference paths).
"""

from stepprune.selector.config import StepPruneConfig
from stepprune.selector.gate import vp_noise_gate
from stepprune.selector.method import StepPrune, backbone_dims
from stepprune.selector.scores import aggregate_scores
from stepprune.selector.soft_topk import soft_topk, soft_topk_sinkhorn

__all__ = [
    "StepPrune",
    "StepPruneConfig",
    "aggregate_scores",
    "backbone_dims",
    "soft_topk",
    "soft_topk_sinkhorn",
    "vp_noise_gate",
]
