"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP tower, 2-layer MLP projector, LLaMA/Vicuna LLM.

Visual tokens are the CLIP patch features of ``config.vision_feature_layer`` (LLaVA-1.5: the penultimate layer)
with CLS dropped (``vision_feature_select_strategy="default"``): N = (image_size / patch_size)^2 = 576 at 336 px.
Vision layer indices for :meth:`VisionFeatures.qk` are CLIP encoder layers: ``qk(i)`` recomputes layer i's
queries/keys from its input ``hidden_states[i]``; with 24 layers and feature layer -2 the features are the output
of layer 22, so VisionZip's "layer -2" attention is ``qk(-2)`` and PruMerge's layer-23 attention is ``qk(-1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.types import PromptBatch, VisionFeatures


class LlavaAdapter(BackboneAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` (LLaVA-1.5 layout)."""

    family = "llava"

    def __init__(self, model, processor, path):
        super().__init__(model, processor, path)
        cfg = model.config
        if not isinstance(cfg.vision_feature_layer, int) or cfg.vision_feature_select_strategy != "default":
            raise NotImplementedError(
                "LlavaAdapter supports LLaVA-1.5's single vision_feature_layer with the 'default' (CLS-dropping) "
                f"strategy; got layer={cfg.vision_feature_layer!r}, strategy={cfg.vision_feature_select_strategy!r}"
            )

    @property
    def vision_layers(self) -> nn.ModuleList:
        tower = self.model.model.vision_tower
        return getattr(tower, "vision_model", tower).encoder.layers  # older CLIP layouts nest a vision_model

    @property
    def visual_token_dim(self) -> int:
        return self.model.config.vision_config.hidden_size

    def _positions(self, input_ids, attention_mask, extra, pixel_inputs) -> Tensor:
        # Each sample's tokens are numbered 0.. ignoring padding (what HF generate does with left padding).
        pos = attention_mask.long().cumsum(dim=1) - 1
        return pos.clamp(min=0)

    @torch.no_grad()
    def vision_features(self, prompt: PromptBatch) -> VisionFeatures:
        pixels = prompt.pixel_inputs["pixel_values"].to(self.device, self.dtype)
        out = self.model.model.vision_tower(pixels, output_hidden_states=True, return_dict=True)
        hidden = out.hidden_states  # embeddings, then the output of every layer: (B, 1 + N, d)
        selected = hidden[self.model.config.vision_feature_layer]
        layers = self.vision_layers
        B, T, _ = selected.shape
        side = int(round((T - 1) ** 0.5))

        def qk(layer: int):
            i = layer % len(layers)
            mod = layers[i]
            x = mod.layer_norm1(hidden[i])
            heads, d = mod.self_attn.num_heads, mod.self_attn.head_dim
            q = mod.self_attn.q_proj(x).view(B, T, heads, d).transpose(1, 2)
            k = mod.self_attn.k_proj(x).view(B, T, heads, d).transpose(1, 2)
            return q, k, torch.ones(B, T, dtype=torch.bool, device=x.device)

        return VisionFeatures(
            tokens=selected[:, 1:],
            num_tokens=torch.full((B,), T - 1, dtype=torch.long, device=selected.device),
            grid=torch.tensor([[side, side]] * B, device=selected.device),
            cls=selected[:, 0],
            qk=qk,
            attn_scale=layers[0].self_attn.scale,
        )

    def project(self, tokens: Tensor) -> Tensor:
        return self.model.model.multi_modal_projector(tokens.to(self.dtype))
