"""The method registry: names to classes, and construction from plain config mappings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stepprune.methods.base import MethodConfig, PruningMethod

METHODS: dict[str, type[PruningMethod]] = {}


class UnknownMethodError(KeyError):
    """Raised for a method name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: adds a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {METHODS[cls.name].__name__}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[PruningMethod]:
    """The class registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; available: {sorted(METHODS)}") from None


def build_method(name: str, config: MethodConfig | Mapping[str, Any] | None = None, **overrides: Any
                 ) -> PruningMethod:
    """Builds a registered method from its typed config or a mapping (unknown keys are errors).

    Example::

        build_method("random", budget=64, seed=1)
    """
    cls = method_class(name)
    if isinstance(config, MethodConfig):
        if overrides:
            raise ValueError("pass either a config object or keyword overrides, not both")
        return cls(config)
    values = {**dict(config or {}), **overrides}
    return cls(cls.config_class.from_dict(values))
