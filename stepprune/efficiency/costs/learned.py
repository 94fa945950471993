"""Cost models of the learned baselines that are not StepPrune: VisionSelector and DyRate-style.

* VisionSelector projects every visual token, scores them with its two linear maps (D -> D/2 each) and the
  mean-key product, and keeps its top K; the scorer runs for real on meta LLM-space rows.
* DyRate-style prunes only during decoding (it evicts visual KV entries as answer tokens are generated), so its
  prefill is the unpruned one and it has no prefill-time overhead; its predictor runs once per generated token,
  which Table 3's prefill / time-to-first-token columns do not include.
"""

from __future__ import annotations

import torch

from stepprune.efficiency.costs.base import Geometry, MethodCost, cost_model
from stepprune.efficiency.scene import MetaScene


@cost_model("visionselector")
def visionselector(method, g: Geometry, k=None) -> MethodCost:
    from stepprune.methods.visionselector import ImportanceScorer

    kept = method.config.inference_count(g.tokens)
    held: dict = {}

    def setup(scene: MetaScene) -> None:  # a weightless scorer of the right width; building it is not the work
        with torch.device("meta"):
            held["scorer"] = ImportanceScorer(scene.adapter.hidden_size, method.config.init_std)

    def overhead(scene: MetaScene) -> None:
        rows = scene.llm_rows(g.tokens)
        held["scorer"](rows, torch.ones(rows.shape[:2], dtype=torch.bool, device=rows.device))

    return MethodCost(kept, [kept] * g.depth, g.tokens, overhead, setup=setup)


@cost_model("dyrate")
def dyrate(method, g: Geometry, k=None) -> MethodCost:
    return MethodCost.before_llm(g, g.tokens, g.tokens)
