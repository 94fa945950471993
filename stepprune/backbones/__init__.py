"""Backbone adapters: frozen HF vision-language models behind the seams that pruning methods need.

``load_backbone(path)`` reads ``config.json``, picks the adapter for its ``model_type`` and loads the model and
processor with ``from_pretrained(path)``: weights from safetensors only, ``trust_remote_code`` off by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.hooks import AttentionBias, DecodeEvict, LayerEdit, PrefillDrop
from stepprune.backbones.llava import LlavaAdapter
from stepprune.backbones.qwen2_5_vl import Qwen25VLAdapter
from stepprune.backbones.types import LMInputs, PromptBatch, VisionFeatures, VisualTokens

ADAPTERS: dict[str, type[BackboneAdapter]] = {
    "llava": LlavaAdapter,
    "qwen2_5_vl": Qwen25VLAdapter,
}


def _model_and_processor_classes(model_type: str):
    from transformers import AutoProcessor, LlavaForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

    from stepprune.backbones.qwen_processor import Qwen25VLImageOnlyProcessor

    return {
        "llava": (LlavaForConditionalGeneration, AutoProcessor),
        "qwen2_5_vl": (Qwen2_5_VLForConditionalGeneration, Qwen25VLImageOnlyProcessor),
    }[model_type]


def load_backbone(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
) -> BackboneAdapter:
    """Loads a local HF model folder and wraps it in its family's adapter (frozen, eval mode).

    Args:
        path: a folder written by ``save_pretrained`` (config, safetensors weights, processor files).
        device: where to put the model.
        dtype: model dtype (e.g. ``torch.bfloat16`` on GPU); the checkpoint's own dtype when None.
        attn_implementation: ``"sdpa"`` (default) or ``"eager"``.
        trust_remote_code: passed to transformers; off unless you opt in.

    Raises:
        FileNotFoundError: the folder or its ``config.json`` is missing.
        ValueError: the ``model_type`` has no adapter.
    """
    from transformers.utils import logging as hf_logging

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"backbone folder not found: {folder}")
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"backbone folder {folder} has no config.json")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type not in ADAPTERS:
        raise ValueError(f"{cfg_file}: model_type {model_type!r} has no adapter; supported: {sorted(ADAPTERS)}")
    model_cls, processor_cls = _model_and_processor_classes(model_type)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    hf_logging.disable_progress_bar()
    model = model_cls.from_pretrained(
        folder,
        dtype=dtype if dtype is not None else "auto",
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    ).to(device)
    processor = processor_cls.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return ADAPTERS[model_type](model, processor, folder)


__all__ = [
    "ADAPTERS",
    "AttentionBias",
    "BackboneAdapter",
    "DecodeEvict",
    "LayerEdit",
    "LlavaAdapter",
    "LMInputs",
    "PrefillDrop",
    "PromptBatch",
    "Qwen25VLAdapter",
    "VisionFeatures",
    "VisualTokens",
    "load_backbone",
]
