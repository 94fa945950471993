"""Trainable methods whose modules are sized by the backbone (StepPrune, VisionSelector).

Such a method cannot build its modules before it knows, e.g., the LLM width. :meth:`BackboneBoundMethod.bind`
reads those dimensions from the adapter into the config fields that are still ``None``, checks the ones already
set, and builds the modules on the adapter's device. Because the dimensions live in the config, a saved
checkpoint records the backbone shape it was trained for, the method is rebuilt from its config alone on
loading, and :meth:`check_compatible` refuses a backbone of another shape with an error naming each mismatch.

Trainer contract: call ``method.bind(adapter)`` before building the optimizer (or let the first forward bind it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

from stepprune.backbones.base import BackboneAdapter
from stepprune.methods.base import PruningMethod


class BackboneBoundMethod(PruningMethod):
    """Base of the trainable methods whose module sizes come from the backbone.

    Subclasses set :attr:`dim_descriptions` (config field -> words used in errors) and implement
    :meth:`backbone_dims`, :attr:`built` and :meth:`_build`.
    """

    dim_descriptions: ClassVar[Mapping[str, str]] = {}

    def backbone_dims(self, adapter: BackboneAdapter) -> dict[str, int]:
        """The backbone-derived config values, ``{field: value}`` (keys of :attr:`dim_descriptions`)."""
        raise NotImplementedError

    @property
    def built(self) -> bool:
        """Whether the modules exist (``stepprune.checkpoint`` refuses to save an unbuilt method)."""
        raise NotImplementedError

    @property
    def dims_known(self) -> bool:
        """Whether every backbone-derived config field is set (the modules can be built without an adapter)."""
        return all(getattr(self.config, k) is not None for k in self.dim_descriptions)

    def _build(self, device: torch.device | None = None) -> None:
        """Creates the modules from the config (every dimension known), on ``device``."""
        raise NotImplementedError

    def bind(self, adapter: BackboneAdapter) -> BackboneBoundMethod:
        """Reads the backbone dimensions into the config and builds the modules on the adapter's device.

        Already-set dimensions must match (:meth:`check_compatible`); an already-built method is moved to the
        adapter's device. Returns ``self``.
        """
        if self.built:
            self.check_compatible(adapter)
            return self.to(adapter.device)
        for key, value in self.backbone_dims(adapter).items():
            if getattr(self.config, key) is None:
                setattr(self.config, key, value)
        self.check_compatible(adapter)
        self._build(adapter.device)
        return self

    def check_compatible(self, adapter: BackboneAdapter) -> None:
        """Raises ValueError naming each stored dimension that differs from the backbone's."""
        found = self.backbone_dims(adapter)
        bad = [f"{k} ({self.dim_descriptions.get(k, k)}): selector has {getattr(self.config, k)}, backbone has {v}"
               for k, v in found.items() if getattr(self.config, k) is not None and getattr(self.config, k) != v]
        if bad:
            raise ValueError(f"{self.name} selector does not match the {adapter.family} backbone at {adapter.path}: "
                             + "; ".join(bad))
