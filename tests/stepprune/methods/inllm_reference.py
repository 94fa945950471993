"""Independent references for the in-LLM methods: the unmodified HF model (eager attention, its own cache and
hidden states) run alone on one unpadded sample, and a runner prefill that exposes the pruned state."""

from __future__ import annotations

import torch

import stepprune
from stepprune.backbones.llm import PrefillResult
from stepprune.backbones.types import VISUAL
from stepprune.methods.base import SelectionContext
from tests.conftest import PROMPTS, make_images
from tests.stepprune.backbones.reference import sample_pixels


def context(adapter, n: int = 1, seed: int = 0, images=None, prompts=None) -> SelectionContext:
    """A selection context on ``n`` deterministic images and the standard prompts."""
    images = images if images is not None else make_images(n, seed=seed)
    prompts = prompts if prompts is not None else PROMPTS[: len(images)]
    prompt = adapter.prepare(images, prompts)
    return SelectionContext(adapter, prompt, adapter.vision_features(prompt))


def pruned_prefill(adapter, ctx: SelectionContext, method) -> PrefillResult:
    """Runs the method's in-LLM hooks over the full prompt; the result's state is the last layer's sequence."""
    vlm = stepprune.PrunedVLM(adapter, method)
    inputs, _ = vlm.llm_inputs(ctx)
    return adapter.runner.prefill(inputs, method.llm_hooks(ctx))


@torch.no_grad()
def hf_outputs(adapter, prompt, b: int = 0):
    """The unmodified HF model on sample ``b`` alone, unpadded: attentions (eager models only), hidden states and
    the KV cache. Returns (outputs, image span start, image token count)."""
    keep = prompt.attention_mask[b].bool()
    ids = prompt.input_ids[b: b + 1, keep]
    kw = dict(input_ids=ids, **sample_pixels(adapter, prompt, b), output_hidden_states=True, use_cache=True,
              output_attentions=adapter.model.config._attn_implementation == "eager")
    if "mm_token_type_ids" in prompt.extra:
        kw["mm_token_type_ids"] = prompt.extra["mm_token_type_ids"][b: b + 1, keep]
        adapter.model.model.rope_deltas = None  # stateful in HF; reset between unrelated calls
    where = (ids[0] == adapter.image_token_id).nonzero().flatten()
    return adapter.model(**kw), int(where[0]), int(where.numel())


def kept_visual(result: PrefillResult, b: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The visual slots that reached the last layer for sample ``b``: (original visual index, position ids)."""
    st = result.state
    vis = (st.segment[b] == VISUAL) & st.valid[b]
    pos = st.positions[:, b][:, vis] if st.positions.dim() == 3 else st.positions[b][vis]
    return st.visual_index[b][vis], pos


def assert_top_by(reference: torch.Tensor, kept: torch.Tensor, tol: float = 1e-6) -> None:
    """Every kept index scores at least as high as every dropped one under ``reference`` (N,), up to ``tol``
    (near-ties may flip between the SDPA model and the eager reference)."""
    mask = torch.zeros_like(reference, dtype=torch.bool)
    mask[kept] = True
    assert kept.unique().numel() == kept.numel()
    if mask.all() or not mask.any():
        return
    assert float(reference[mask].min()) >= float(reference[~mask].max()) - tol
