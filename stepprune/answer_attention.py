"""Where a backbone looks when it answers: the last prompt token's attention over the visual tokens, per layer.

The last prompt slot (the one whose next token is the answer's first) is where a LLaVA-style LLM reads the image
for a short answer. :func:`answer_slot_attention` returns its head-mean, post-softmax attention over the visual
tokens at every decoder layer of the unpruned model, so a backbone's grounding can be measured against SynthVQA's
evidence patches (``jobs/bench_backbone_grounding.py``): how much of that attention lands on the patches that
answer the question, and whether the answer is right when it does. It is a measurement of the backbone, not a
pruning method; nothing is dropped.

The rows are recomputed from each layer's recorded input with the layer's own norm, projections and RoPE
(:class:`~stepprune.backbones.llm.PrefillContext`), so the model keeps SDPA; a test checks them against
transformers' eager ``output_attentions``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.hooks import PrefillDrop
from stepprune.backbones.types import PromptBatch
from stepprune.methods.in_llm import last_slot, visual_slots


@torch.no_grad()
def answer_slot_attention(adapter: BackboneAdapter, prompt: PromptBatch) -> Tensor:
    """Head-mean attention of each sample's last prompt slot over its visual tokens, at every decoder layer.

    Args:
        adapter: the backbone.
        prompt: a batch from ``adapter.prepare`` (questions without answers: the last slot is the answer slot).

    Returns:
        (B, num_layers, N) fp32, N the batch's largest visual-token count; entry ``[b, l, i]`` is the attention
        mass that layer l's last-slot query puts on visual token i (raster order). A row sums to at most 1 (the
        rest went to text); padding columns of samples with fewer tokens are 0.
    """
    vision = adapter.vision_features(prompt)
    visual = adapter.keep_all(vision)
    inputs = adapter.splice(prompt, visual, vision, "original")
    layers = adapter.num_layers
    n = visual.embeds.shape[1]
    out = torch.zeros(visual.embeds.shape[0], layers, n, dtype=torch.float32, device=visual.embeds.device)
    hook_layer = layers - 1

    def record(pctx):
        st = pctx.state
        query = last_slot(st)
        for layer in range(layers):
            if layer == hook_layer:
                rows, st_l = pctx.current_attention_rows(query), st  # (B, H, 1, L)
            else:
                rows, st_l = pctx.attention_rows(layer, query), pctx.layer_input(layer)[1]
            row = rows.mean(dim=1)[:, 0]  # (B, L)
            b, slot = visual_slots(st_l).nonzero(as_tuple=True)
            out[b, layer, st_l.visual_index[b, slot]] = row[b, slot]
        return st.valid.clone()  # keep every slot: this hook only looks

    adapter.forward(inputs, drops=[PrefillDrop(hook_layer, record, record_inputs=tuple(range(hook_layer)))])
    return out
