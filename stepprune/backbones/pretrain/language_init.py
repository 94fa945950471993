"""Starting points of the language stage that tie the fresh LLM to what the vision stage already made linear.

After stage 1 the projected visual tokens carry each patch's colour, shape, size and word *linearly*: the per-patch
head (:class:`~.objectives.PatchHeads`, LayerNorm then one linear map) reads them off at 94-99 %. A fresh LLM
still has to discover that the question word " red" and a red patch belong together, and the embedded backbone's
grounding diagnostics (``docs/results/backbone_grounding.md``) show it never quite does in busy scenes: the answer
slot finds objects, not the one the question names. Two cheap starting points act on exactly that match:

* :func:`align_word_embeddings` points the input embedding of every colour, shape, size and word name along the
  direction the per-patch head reads that class from, and the output embedding (the LM head row) the same way.
  Then a question word and the patches it names start out similar (an attention that compares them finds the
  patch), and an answer slot that copies a patch's token already scores that patch's colour / shape / word.
* :func:`mimetic_qk` sets every attention head's key projection equal to its query projection, so
  ``q . k = x^T W_q^T W_q y`` starts as a similarity (Trockman & Kolter, "Mimetic initialization of
  self-attention layers", 2023: pretrained attention's ``W_q W_k^T`` has a strong positive diagonal, and starting
  there speeds up small-data training). With the aligned embeddings, "attend to what the question says" is then
  the starting behaviour rather than something to find.

Both only change a starting point; every weight stays trainable. Measured on the stage-2 probe
(``jobs/bench_stage2_recipe.py``, ``docs/results/backbone_grounding.md``): neither helps (36.7 and 34.5 % at 200
steps against the recipe's 38.2), so both are off (``stage2.init_words``, ``stage2.init_qk``) in the committed recipe.
"""

from __future__ import annotations

import torch
from torch import nn

from stepprune.backbones.pretrain.objectives import PatchHeads
from stepprune.backbones.pretrain.words import NAMED_CLASSES, word_token


def class_directions(heads: PatchHeads) -> dict[str, torch.Tensor]:
    """The visual-token direction each aligned class is read from.

    The head's logit for class ``c`` is ``W[c] . (gamma * (x - mean(x)) / std(x)) + b``: up to the token's own
    scale it is ``x . (W[c] * gamma)`` with the mean removed, and the LLM's RMSNorm keeps directions. So the
    direction is ``W[c] * gamma`` minus its mean, unit length.

    Returns:
        {name: (D,) unit vector} for every name of :data:`~.words.NAMED_CLASSES`.
    """
    weight = heads.proj.weight.detach().float() * heads.norm.weight.detach().float()[None]
    # the class rows lead the projection in heads.names order, as PatchHeads.forward splits them
    blocks = dict(zip(heads.names, torch.split(weight[:sum(heads.sizes)], heads.sizes)))
    out = {}
    for kind, names in NAMED_CLASSES.items():
        for name, d in zip(names, blocks[kind]):
            d = d - d.mean()
            out[name] = d / d.norm().clamp_min(1e-12)
    return out


@torch.no_grad()
def align_word_embeddings(model, tokenizer, heads: PatchHeads) -> int:
    """Point the input and output embeddings of the aligned names along their per-patch head directions.

    Each row keeps the mean norm of its matrix (so the residual stream's scale is what the init made it).

    Args:
        model: a ``LlavaForConditionalGeneration`` (its input embeddings and ``lm_head`` are changed in place).
        tokenizer: its tokenizer; every ``" name"`` must be one token.
        heads: the stage-1 per-patch heads whose directions are used.

    Returns:
        The number of vocabulary rows aligned.
    """
    directions = class_directions(heads)
    ids = {name: word_token(tokenizer, name) for name in directions}
    tables = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != tables[0].data_ptr():
        tables.append(out.weight)
    for table in tables:
        norm = table.norm(dim=-1).mean()
        for name, d in directions.items():
            table[ids[name]] = (norm * d).to(table.dtype)
    return len(ids)


@torch.no_grad()
def mimetic_qk(model) -> int:
    """Set every decoder layer's key projection to its query projection (same number of key and query heads).

    Returns:
        The number of layers changed.
    """
    layers = model.model.language_model.layers
    for layer in layers:
        attn = layer.self_attn
        q: nn.Linear = attn.q_proj
        k: nn.Linear = attn.k_proj
        if q.weight.shape != k.weight.shape:
            raise ValueError("mimetic_qk needs as many key/value heads as query heads (no grouped-query attention)")
        k.weight.copy_(q.weight)
        if q.bias is not None and k.bias is not None:
            k.bias.copy_(q.bias)
    return len(layers)
