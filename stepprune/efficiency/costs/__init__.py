"""Per-method cost descriptions (:class:`MethodCost`) and their registry; importing this package registers a cost
model for every method that ships with the library."""

from stepprune.efficiency.costs import controls, in_llm, learned, pre_llm, stepprune  # noqa: F401  (registers)
from stepprune.efficiency.costs.base import ADAPTIVE, COST_MODELS, Geometry, MethodCost, cost_model, method_cost

__all__ = ["ADAPTIVE", "COST_MODELS", "Geometry", "MethodCost", "cost_model", "method_cost"]
