"""Resumable training state of backbone pretraining, safetensors only (no pickles): model and head weights,
the AdamW moments, and a small JSON of where the run is.

Folder layout (one Ray Train checkpoint)::

    model.safetensors      the LLaVA state dict
    heads.safetensors      the objective heads (``patch.*``, ``cls.*``)
    optimizer.safetensors  AdamW state tensors, keyed ``<param index>.<name>``
    optimizer.json         AdamW param groups (lr, betas, ...), indices into the stage's parameter list
    state.json             {"stage", "step", "global_step", "seconds", ...}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

STATE_FILE = "state.json"


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_state(folder: Path, model: nn.Module, heads: dict[str, nn.Module],
               optimizer: torch.optim.Optimizer | None, state: dict[str, Any]) -> None:
    """Writes the training state into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(model.state_dict()), str(folder / "model.safetensors"))
    save_file(_contiguous({f"{name}.{k}": v for name, m in heads.items() for k, v in m.state_dict().items()}),
              str(folder / "heads.safetensors"))
    if optimizer is not None:
        sd = optimizer.state_dict()
        tensors = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
        if tensors:
            save_file(_contiguous(tensors), str(folder / "optimizer.safetensors"))
        (folder / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"]}))
    (folder / STATE_FILE).write_text(json.dumps(state))


def load_weights(folder: Path, model: nn.Module, heads: dict[str, nn.Module]) -> dict[str, Any]:
    """Loads model and head weights from ``folder``; returns its ``state.json``."""
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    flat = load_file(str(folder / "heads.safetensors"))
    for name, m in heads.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + ".")})
    return json.loads((folder / STATE_FILE).read_text())


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> bool:
    """Restores AdamW moments saved by :func:`save_state` for the same parameter list; False if none saved."""
    meta_file = folder / "optimizer.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    tensors = load_file(str(folder / "optimizer.safetensors")) if (folder / "optimizer.safetensors").is_file() \
        else {}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return True
