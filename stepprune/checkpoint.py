"""Saving and loading trained pruning methods, generic over every registered trainable method.

A checkpoint is a folder of three files:

* ``selector.safetensors`` — the method's ``state_dict`` (parameters and buffers, e.g. StepPrune's k_bar and
  running noise scale), safetensors only;
* ``selector_config.json`` — ``{"method": <registered name>, "config": <the typed config as a dict>}``;
* ``meta.json`` — ``{"format", "method", "backbone": {"family", "path", "name"}, "step", "config_hash",
  "code_version"}``; ``config_hash`` is the SHA-256 of the canonical JSON of ``selector_config.json`` and
  ``code_version`` the git SHA of the source tree when available, else the package version.

Loading rebuilds the registered method from its config, loads the weights strictly, and — given the adapter it will
run on — checks that the backbone family matches and calls the method's
:meth:`~stepprune.methods.base.PruningMethod.check_compatible` (StepPrune: d_tok, LLM width, patch group), failing
with an error that names the mismatch.

Example::

    save_checkpoint(method, "runs/sel-64", adapter=adapter, step=1000)
    method = load_checkpoint("runs/sel-64", adapter)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from stepprune.backbones.base import BackboneAdapter
from stepprune.methods.base import PruningMethod
from stepprune.methods.registry import method_class

FORMAT_VERSION = 1
WEIGHTS_FILE = "selector.safetensors"
CONFIG_FILE = "selector_config.json"
META_FILE = "meta.json"


def config_record(method: PruningMethod) -> dict[str, Any]:
    """What ``selector_config.json`` holds for ``method``."""
    return {"method": method.name, "config": dataclasses.asdict(method.config)}


def config_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a config record."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def code_version(root: str | Path | None = None, paths: tuple[str, ...] = (".",)) -> str:
    """The git SHA of the source tree (``+dirty`` with uncommitted changes under ``paths`` of ``root``; default:
    this package's folder), else the package version."""
    here = Path(root) if root is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", *paths], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from stepprune import __version__

        return __version__


def save_checkpoint(
    method: PruningMethod,
    folder: str | Path,
    *,
    adapter: BackboneAdapter | None = None,
    backbone: str | None = None,
    step: int | None = None,
) -> Path:
    """Writes ``method`` to ``folder`` (created if needed) and returns the folder.

    Args:
        method: a registered method (its ``state_dict`` may be empty for training-free methods).
        folder: destination.
        adapter: the backbone it was trained on (its family and path go to ``meta.json``).
        backbone: a backbone name/path for ``meta.json`` when no adapter is at hand.
        step: the optimizer step.

    Raises:
        ValueError: the method's modules are not built yet (StepPrune: call ``bind(adapter)`` first).
    """
    if not getattr(method, "built", True):
        raise ValueError(f"{method.name}: nothing to save yet; its modules are built by bind(adapter) or the "
                         "first forward")
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in method.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": str(FORMAT_VERSION), "method": method.name})
    record = config_record(method)
    (out / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if adapter is not None:
        info = {"family": adapter.family, "path": str(adapter.path), "name": adapter.path.name}
    else:
        info = {"family": None, "path": backbone, "name": Path(backbone).name if backbone else None}
    meta = {"format": FORMAT_VERSION, "method": method.name, "backbone": info, "step": step,
            "config_hash": config_hash(record), "code_version": code_version()}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def load_checkpoint(
    folder: str | Path,
    adapter: BackboneAdapter | None = None,
    *,
    device: str | torch.device | None = None,
) -> PruningMethod:
    """Rebuilds a saved method, loads its weights and checks it against ``adapter``.

    Args:
        folder: a folder written by :func:`save_checkpoint`.
        adapter: the backbone the method will run on (checked, and the method is moved to its device).
        device: where to put the method when no adapter is given (default CPU).

    Returns:
        The method in eval mode.

    Raises:
        FileNotFoundError: the folder or one of its three files is missing (named).
        ValueError: the config does not match ``meta.json``, the weights do not fit the config, or the backbone
            does not match (the message names the mismatch).
    """
    from safetensors.torch import load_file

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {root}")
    for name in (WEIGHTS_FILE, CONFIG_FILE, META_FILE):
        if not (root / name).is_file():
            raise FileNotFoundError(f"checkpoint folder {root} has no {name}")
    record = _read_json(root / CONFIG_FILE)
    meta = _read_json(root / META_FILE)
    if meta.get("config_hash") != config_hash(record):
        raise ValueError(f"{root / CONFIG_FILE} does not match the config hash in {root / META_FILE} (edited, or "
                         "files from two checkpoints)")
    cls = method_class(record["method"])
    method = cls(cls.config_class.from_dict(record["config"]))
    state = load_file(str(root / WEIGHTS_FILE), device="cpu")
    try:
        missing, unexpected = method.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{root / WEIGHTS_FILE} does not fit the {record['method']} config: {err}") from None
    if missing or unexpected:
        raise ValueError(f"{root / WEIGHTS_FILE} does not fit the {record['method']} config: missing "
                         f"{sorted(missing)}, unexpected {sorted(unexpected)}")
    if adapter is not None:
        family = (meta.get("backbone") or {}).get("family")
        if family is not None and family != adapter.family:
            raise ValueError(f"checkpoint {root} was trained on a {family} backbone, not {adapter.family} "
                             f"({adapter.path})")
        method.check_compatible(adapter)
        device = adapter.device
    return method.to(device or "cpu").eval()
