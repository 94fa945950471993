"""Cost models of the controls (``vanilla``, ``blind``, ``random``, ``uniform``, ``pool``): no scoring work.

``blind``, ``random`` and ``uniform`` project every token and then gather (``ctx.projected()``); ``pool`` projects
only its K pooled rows (the average pool itself is an index-add, no matrix product).
"""

from __future__ import annotations

from stepprune.efficiency.costs.base import Geometry, MethodCost, cost_model


@cost_model("vanilla")
def vanilla(method, g: Geometry, k=None) -> MethodCost:
    return MethodCost.before_llm(g, g.tokens, g.tokens)


@cost_model("blind")
def blind(method, g: Geometry, k=None) -> MethodCost:
    return MethodCost.before_llm(g, 0, g.tokens)


@cost_model("random", "uniform")
def subset(method, g: Geometry, k=None) -> MethodCost:
    return MethodCost.before_llm(g, method.config.keep_count(g.tokens), g.tokens)


@cost_model("pool")
def pool(method, g: Geometry, k=None) -> MethodCost:
    kept = method.config.keep_count(g.tokens)
    return MethodCost.before_llm(g, kept, kept)
