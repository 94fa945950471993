"""Typed configs from YAML with dotted command-line overrides. The only config loader of the project.

A config is a tree of dataclasses. ``load(cls, path, overrides)`` reads a YAML mapping into it, applies overrides
such as ``optim.lr=3e-4`` or ``method.config.budget=64`` (values parsed as YAML scalars), and checks every value
against its field's type. Unknown keys are errors that name the file and the dotted key, and list the valid keys.
Fields typed ``dict[str, Any]`` hold free-form mappings (e.g. a method's own config, validated by that method).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks/converts one value to the field type ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        # one typed alternative (``X | None``): its own error names the field and the reason
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: {value!r} does not fit {_type_name(tp)} ({'; '.join(errors)})")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        val_t = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Builds dataclass ``cls`` from a mapping, recursively and strictly."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'; valid keys here: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {p!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=x"]`` -> ``[("a.b", 1), ("c", "x")]`` with YAML-parsed values."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw != "" else "")
                   )
    return out


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Loads ``cls`` from a YAML file (or its defaults when ``path`` is None) plus dotted overrides.

    Raises:
        ConfigError: naming the file and the offending key or value.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        tree = loaded or {}
    tree = json.loads(json.dumps(tree))  # deep copy of plain data
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value)
    try:
        return from_dict(cls, tree)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (what Ray ships to workers and what runs record)."""
    return dataclasses.asdict(cfg)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    if dataclasses.is_dataclass(tree):
        tree = dataclasses.asdict(tree)
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_hash(cfg: Any) -> str:
    """A short stable hash of a config's content."""
    blob = json.dumps(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def dump(cfg: Any, path: str | Path) -> None:
    """Writes the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def field_paths(cls: type) -> set[str]:
    """Every dotted key the schema accepts (free-form mappings end the path)."""
    hints = typing.get_type_hints(cls)
    out = set()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
            Union, types.UnionType) else [tp]
        sub = next((a for a in inner if dataclasses.is_dataclass(a)), None)
        if sub is not None:
            out |= {f"{f.name}.{p}" for p in field_paths(sub)}
            if len(inner) < len(typing.get_args(tp)):  # an optional section: the key itself takes null
                out.add(f.name)
        else:
            out.add(f.name)
    return out
