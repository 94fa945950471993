"""Helpers shared by the pre-LLM baseline tests: contexts, vanilla references, and the official-style CLIP hooks."""

from __future__ import annotations

import numpy as np
import torch

import stepprune
from stepprune.methods.base import SelectionContext
from tests.conftest import PROMPTS, make_images


def context(adapter, n: int = 2, seed: int = 0, images=None) -> SelectionContext:
    """A selection context over ``n`` deterministic images (or the given ones)."""
    images = images if images is not None else make_images(n, seed=seed)
    prompt = adapter.prepare(images, [PROMPTS[i % len(PROMPTS)] for i in range(len(images))])
    return SelectionContext(adapter, prompt, adapter.vision_features(prompt))


def generate(adapter, method, prompt, max_new_tokens: int = 3):
    """Greedy generation of a method through PrunedVLM."""
    return stepprune.PrunedVLM(adapter, method).generate(prompt, max_new_tokens=max_new_tokens)


def assert_generation_equals_vanilla(adapter, method, n: int = 2) -> None:
    """The method's generated tokens (and LLM visual inputs) equal the unpruned model's."""
    prompt = adapter.prepare(make_images(n, seed=1), PROMPTS[:n])
    ours = generate(adapter, method, prompt)
    ref = generate(adapter, stepprune.build_method("vanilla"), prompt)
    assert torch.equal(ours.tokens, ref.tokens)
    assert ours.kept_index == ref.kept_index
    assert torch.equal(ours.visual_per_layer, ref.visual_per_layer)


def official_clip_qk(llava, pixel_values, layer: int = -1):
    """Runs the CLIP tower with forward hooks on one layer's q_proj/k_proj, as the official PruMerge code does.

    Returns:
        (q, k, features): the layer's (B, 1+N, width) unscaled query/key projections and the (B, N, width)
        penultimate-layer patch features LLaVA uses.
    """
    attn = llava.vision_layers[layer].self_attn
    got = {}
    hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: got.__setitem__("q", o)),
             attn.k_proj.register_forward_hook(lambda m, i, o: got.__setitem__("k", o))]
    try:
        with torch.no_grad():
            out = llava.model.model.vision_tower(pixel_values.to(llava.dtype), output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    return got["q"], got["k"], out.hidden_states[-2][:, 1:]


def numpy_iqr_ratio(scores: torch.Tensor) -> float:
    """The official ``outlier_dectection``: fraction of values above Q3 + 1.5 IQR (numpy percentiles)."""
    x = scores.double().cpu().numpy().flatten()
    q1, q3 = np.percentile(x, 25), np.percentile(x, 75)
    return len(np.where(x > q3 + 1.5 * (q3 - q1))[0]) / len(x)
