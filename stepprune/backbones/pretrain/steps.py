"""The two pretraining stages' forward passes and losses, on a ``LlavaForConditionalGeneration`` through its
public submodules (``vision_tower``, ``multi_modal_projector``, ``language_model``, ``lm_head``,
``get_input_embeddings``), exactly the seams the backbone adapter uses at evaluation.

* Stage 1 (:func:`vision_step`): vision tower + projector + the objective heads. No language model.
* Stage 2 (:func:`language_step`): projector + language model on packed multi-QA sequences (the vision tower
  frozen or not, the caller decides by ``requires_grad``), plus the per-patch objective on the projected tokens as
  an auxiliary term that keeps the visual tokens decodable while the projector adapts to the LLM, and optionally
  the grounding term (:func:`grounding_loss`) that breaks the language-prior plateau.

Shapes: B images, N = 576 visual tokens, d vision width, D LLM width, L packed slots, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from stepprune.backbones.answer_loss import per_question_mean
from stepprune.backbones.pretrain.objectives import ClsHeads, PatchHeads, SlotWordsHead
from stepprune.backbones.pretrain.packing import segment_mask


@dataclasses.dataclass
class StepOutput:
    """One forward pass: the loss to back-propagate and detached diagnostics."""

    loss: Tensor
    metrics: dict[str, float]
    # Teacher-forced exact match per packed question (stage 2 only): (family, all answer tokens right).
    answers: list[tuple[str, bool]] = dataclasses.field(default_factory=list)


def vision_outputs(model, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
    """Runs the vision tower as LLaVA reads it.

    Returns:
        ``features``: (B, N, d) the ``vision_feature_layer`` patch features with CLS dropped (the LLM's visual
        tokens before the projector); ``pooled``: (B, d) CLIP's pooled CLS output (post-layernorm, last layer).
    """
    out = model.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    features = out.hidden_states[model.config.vision_feature_layer][:, 1:]
    return features, out.pooler_output


def vision_step(model, patch_heads: PatchHeads, cls_heads: ClsHeads, batch: dict, cls_weight: float = 1.0
                ) -> StepOutput:
    """Stage 1: per-patch objective on the projected visual tokens + image-level objective on CLS."""
    features, pooled = vision_outputs(model, batch["pixel_values"])
    tokens = model.model.multi_modal_projector(features)  # (B, N, D)
    l_patch, m_patch = patch_heads.loss(tokens, batch["patch"])
    l_cls, m_cls = cls_heads.loss(pooled, batch["image"])
    loss = l_patch + cls_weight * l_cls
    return StepOutput(loss, {"loss": float(loss.detach()), "loss_patch": float(l_patch.detach()),
                             "loss_cls": float(l_cls.detach()), **m_patch, **m_cls})


def _answer_matches(pred: Tensor, target: Tensor, segment: Tensor, families: list[list[str]]
                    ) -> list[tuple[str, bool]]:
    """Per packed question, whether every answer token was predicted right (teacher forcing)."""
    out = []
    for b, fams in enumerate(families):
        for k, fam in enumerate(fams):
            where = (segment[b] == k + 1) & (target[b] != -100)
            out.append((fam, bool((pred[b][where] == target[b][where]).all())))
    return out


def packed_forward(model, batch: dict, layer_input: int | Sequence[int] | None = None
                   ) -> tuple[Tensor, Tensor, Tensor | tuple[Tensor, ...] | None]:
    """The language model over packed multi-QA sequences (block mask, per-segment positions).

    Args:
        layer_input: also return the hidden states entering this decoder layer (or these layers).

    Returns:
        ``hidden``: (B, L, D) final-norm hidden states; ``tokens``: (B, N, D) the projected visual tokens;
        the (B, L, D) input of layer ``layer_input`` (a tuple of them for a sequence of layers; None when not
        asked).
    """
    text = batch["text"]
    ids = text["input_ids"]
    vision_trainable = any(p.requires_grad for p in model.model.vision_tower.parameters())
    with torch.set_grad_enabled(vision_trainable and torch.is_grad_enabled()):
        features, _ = vision_outputs(model, batch["pixel_values"])
    tokens = model.model.multi_modal_projector(features)  # (B, N, D)
    embeds = model.get_input_embeddings()(ids)  # (B, L, D)
    is_image = (ids == model.config.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(is_image.expand_as(embeds), tokens.to(embeds.dtype))
    out = model.model.language_model(inputs_embeds=embeds, attention_mask=segment_mask(text["segment"]),
                                     position_ids=text["positions"], use_cache=False,
                                     output_hidden_states=layer_input is not None)
    if layer_input is None:
        return out.last_hidden_state, tokens, None
    if isinstance(layer_input, int):
        return out.last_hidden_state, tokens, out.hidden_states[layer_input]
    return out.last_hidden_state, tokens, tuple(out.hidden_states[i] for i in layer_input)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def answer_slots(labels: Tensor) -> Tensor:
    """(L,) one packed sequence's labels -> the positions of its answer-predicting slots: the last prompt slot of
    each question, whose next token is its answer's first."""
    return ((labels[1:] != -100) & (labels[:-1] == -100)).nonzero().flatten()


def named_words(text: dict, b: int, slot: int) -> Tensor:
    """(L,) bool: the positions of sequence ``b`` where the question answered at ``slot`` names its object
    (``text["query_words"]`` within that question's segment)."""
    return text["query_words"][b] & (text["segment"][b] == text["segment"][b, slot])


def _answer_rows(model, layer_input: Tensor, batch: dict, layer: int
                 ) -> tuple[list[Tensor], list[tuple[int, Tensor]]]:
    """Every question's answer-predicting slot's per-head attention over the whole packed sequence, in one layer.

    Recomputed from the layer's input with its own norm, projections and rotary embedding, so the model keeps
    SDPA. The answer-predicting slot of a question is the last slot of its prompt (the one whose next token is
    the answer's first).

    Returns:
        Per image with questions, (Q_b, H, L) attention rows, and that image's index with the (Q_b,) slots of
        its rows.
    """
    lm = model.model.language_model
    block = lm.layers[layer]
    attn = block.self_attn
    text = batch["text"]
    labels, segment, positions = text["labels"], text["segment"], text["positions"]
    x = block.input_layernorm(layer_input)  # (B, L, D)
    cos, sin = lm.rotary_emb(x, positions)  # (B, L, d)
    B, L, _ = x.shape
    d, groups = attn.head_dim, attn.num_key_value_groups
    k = attn.k_proj(x).view(B, L, -1, d)
    k = k * cos[:, :, None] + _rotate_half(k) * sin[:, :, None]
    k = k.repeat_interleave(groups, dim=2)  # (B, L, H, d)
    mask = segment_mask(segment)[:, 0]  # (B, L, L)
    rows, slots = [], []
    for b in range(B):
        starts = answer_slots(labels[b])
        if starts.numel() == 0:
            continue
        q = attn.q_proj(x[b, starts]).view(len(starts), -1, d)  # (Q_b, H, d)
        q = q * cos[b, starts][:, None] + _rotate_half(q) * sin[b, starts][:, None]
        logits = torch.einsum("qhd,lhd->qhl", q, k[b]) * attn.scaling
        logits = logits.masked_fill(~mask[b, starts][:, None], float("-inf"))
        rows.append(logits.float().softmax(dim=-1))  # (Q_b, H, L)
        slots.append((b, starts))
    return rows, slots


def answer_attention(model, layer_input: Tensor, batch: dict, layer: int, per_head: bool = False
                     ) -> tuple[Tensor, list[tuple[int, int]]]:
    """Head-averaged (or per-head) attention of every question's answer-predicting slot over the visual tokens,
    in one layer (:func:`_answer_rows`).

    Returns:
        (Q, N) attention on the N visual tokens ((Q, H, N) with ``per_head``; rows need not sum to 1: the rest
        went to text), and the ``(image, segment)`` of each row.
    """
    rows, slots = _answer_rows(model, layer_input, batch, layer)
    segment = batch["text"]["segment"]
    where = [(b, int(segment[b, i])) for b, starts in slots for i in starts]
    if not rows:
        heads = model.model.language_model.layers[layer].self_attn.config.num_attention_heads
        return layer_input.new_zeros((0, heads, 0) if per_head else (0, 0)), where
    is_image = batch["text"]["input_ids"] == model.config.image_token_id
    out = torch.cat([a[..., is_image[b]] for a, (b, _) in zip(rows, slots)])
    return (out if per_head else out.mean(dim=1)), where


def query_grounding_loss(model, layer_input: Tensor, batch: dict, layer: int = 0, heads: int = 0
                         ) -> tuple[Tensor, float]:
    """``-log`` of the attention mass that each question's answer-predicting slot puts on the words its question
    names the object by (``batch["text"]["query_words"]``: the colours, shapes, sizes and rendered words of the
    question's first line), in one layer, averaged over the first ``heads`` heads (0: all).

    Why: the grounding term (:func:`grounding_loss`) tells a later layer which patches answer the question, but
    the query that has to find them is whatever the answer slot has gathered by then. In the backbone committed
    before the slot-words term layer 0's answer slot put 0.09 of its head-mean attention on the named words (one
    head 0.5), and the layer-1 lookup matched single words (objects sharing one named attribute got 2.8x the
    attention per patch of objects sharing none, the named object 7x): this term builds the whole phrase into the
    query first.
    Measured (``docs/results/backbone_grounding.md``): it does (named-word mass 0.01 -> 0.99 in 75 steps), but the
    layer-1 evidence mass and the validation accuracy barely move, so it is off in the committed recipe.

    Returns:
        The loss over questions that name something, and their mean named-word mass (nan when none does).
    """
    rows, slots = _answer_rows(model, layer_input, batch, layer)
    losses, mass = [], []
    for a, (b, starts) in zip(rows, slots):
        for i, slot in enumerate(starts):
            cols = named_words(batch["text"], b, slot)
            if not bool(cols.any()):
                continue
            per_head = a[i][:, cols].sum(dim=-1)  # (H,)
            m = per_head[:heads].mean() if heads else per_head.mean()
            losses.append(-torch.log(m + 1e-6))
            mass.append(float(m.detach()))
    if not losses:
        return layer_input.new_zeros(()), float("nan")
    return torch.stack(losses).mean(), sum(mass) / len(mass)


def slot_words_loss(head: SlotWordsHead, layer_input: Tensor, batch: dict) -> tuple[Tensor, float]:
    """Cross-entropy of the named words' bag (``batch["text"]["query_words"]``, uniform over the distinct ones)
    against :class:`SlotWordsHead`'s read-out of each answer-predicting slot's hidden state, over the questions
    that name something.

    Why: in the backbone committed before this term, a fresh bilinear lookup on the layer-1 visual inputs, queried
    by the bag of named words, learns to put 0.90 of its mass on the named object (0.83 in scenes of 11-20
    objects), while the same lookup queried by the answer slot's own layer-1 input stalls at 0.38, near the LLM's
    own 0.35 (``docs/results/backbone_grounding.md``): the slot does not hold the description when the lookup runs. This
    term makes the layers below the lookup gather the named words *into* the slot's state, not only attend to
    them (the query term's pattern, which left the evidence mass where it was).

    Args:
        layer_input: (B, L, D) the hidden states entering the grounding layer.

    Returns:
        The loss and the mean probability the read-out gives the named words (nan when no question names any).
    """
    text = batch["text"]
    ids = text["input_ids"]
    rows, targets = [], []
    for b in range(ids.shape[0]):
        for slot in answer_slots(text["labels"][b]).tolist():
            named = ids[b][named_words(text, b, slot)].unique()
            if named.numel():
                rows.append(layer_input[b, slot])
                target = layer_input.new_zeros(head.proj.out_features, dtype=torch.float32)
                target[named] = 1.0 / named.numel()
                targets.append(target)
    if not rows:
        return layer_input.new_zeros(()), float("nan")
    logp = head(torch.stack(rows)).float().log_softmax(dim=-1)  # (Q, V)
    target = torch.stack(targets)
    loss = -(target * logp).sum(dim=-1).mean()
    hit = (logp.detach().exp() * (target > 0)).sum(dim=-1).mean()
    return loss, float(hit)


def grounding_loss(model, layer_input: Tensor, batch: dict, layer: int,
                   referent_families: Collection[str] = (), per_head: bool = False) -> tuple[Tensor, float]:
    """``-log`` of the attention mass that each question's answer-predicting slot puts on its evidence patches
    (head average, one layer), over questions with evidence.

    Why: with 576 visual tokens the attention of a fresh LLM is spread uniformly, so the gradient towards the few
    patches that hold the answer is tiny and the model sits on the answer prior (the feasibility note's plateau;
    measured again here: 4,800 images of stage 2 without it left every family at its prior). SynthVQA knows
    which patches answer each question, so one layer is told where to look; the job applies it only during the
    first part of stage 2 (its weight decays to 0), after which the model keeps looking because it pays.

    Questions of ``referent_families`` with 2 to H referents are grounded per referent instead: head ``h`` is told
    to look at referent ``h`` alone (in the order the question names them), and the question's loss is the mean
    of those heads' ``-log`` masses. Why: the head average on the union of both referents of "is the A left or
    right of the B?" reads the two shapes' mean position, the one quantity that cannot tell left from right; one
    head per referent gives the next layers both positions apart. Needs ``batch["referent_evidence"]``.

    With ``per_head`` the other questions' loss is the head mean of ``-log`` (every head is told to find the
    evidence) instead of ``-log`` of the head mean (which one head can satisfy alone); the reported mass is the
    head mean either way.

    Returns:
        The loss and the mean evidence mass (diagnostic; per-referent questions count their heads' mean).
    """
    att, where = answer_attention(model, layer_input, batch, layer, per_head=True)  # (Q, H, N)
    losses, mass = [], []
    for row, (b, seg) in zip(att, where):
        refs = batch["referent_evidence"][b][seg - 1] if referent_families else []
        if batch["families"][b][seg - 1] in referent_families and 2 <= len(refs) <= row.shape[0] and all(refs):
            m = torch.stack([row[h, torch.as_tensor(ev, device=row.device)].sum() for h, ev in enumerate(refs)])
            losses.append(-torch.log(m + 1e-6).mean())
            mass.append(float(m.detach().mean()))
            continue
        ev = batch["evidence"][b][seg - 1]
        if ev:
            m = row[:, torch.as_tensor(ev, device=row.device)].sum(dim=-1)  # (H,)
            losses.append(-torch.log(m + 1e-6).mean() if per_head else -torch.log(m.mean() + 1e-6))
            mass.append(float(m.detach().mean()))
    if not losses:
        return layer_input.new_zeros(()), float("nan")
    return torch.stack(losses).mean(), sum(mass) / len(mass)


def language_step(model, patch_heads: PatchHeads | None, batch: dict, aux_weight: float = 0.0,
                  with_answers: bool = False, ground_weight: float = 0.0, ground_layer: int = 1,
                  loss_per: str = "token", ground_referents: Collection[str] = (),
                  ground_per_head: bool = False, query_weight: float = 0.0, query_heads: int = 0,
                  measure_attention: bool = False, slot_head: SlotWordsHead | None = None,
                  slot_weight: float = 0.0) -> StepOutput:
    """Stage 2: next-token loss on the answers of packed multi-QA sequences.

    Args:
        model: the LLaVA model (freeze the vision tower by ``requires_grad_(False)`` to skip its backward).
        patch_heads: the stage-1 per-patch heads, for the auxiliary term (None or ``aux_weight=0``: none).
        batch: a :func:`~.batches.make_batch` batch with ``text``.
        aux_weight: weight of the per-patch term on the projected tokens.
        with_answers: also return per-question teacher-forced exact match (diagnostics).
        ground_weight: weight of :func:`grounding_loss` (0: not computed).
        ground_layer: the decoder layer it supervises.
        ground_referents: question families grounded one head per referent (see :func:`grounding_loss`).
        ground_per_head: every head grounded on the evidence (see :func:`grounding_loss`).
        query_weight: weight of :func:`query_grounding_loss` in layer 0 (0: not computed).
        query_heads: the leading heads of layer 0 it supervises (0: all).
        slot_head, slot_weight: :func:`slot_words_loss` on the ``ground_layer`` input and its weight (0: off).
        measure_attention: also report ``evidence_mass`` (``ground_layer``, head mean) and ``query_mass`` (layer 0,
            ``query_heads``) when their terms are off (diagnostics: not in the loss).
        loss_per: ``"token"`` averages the next-token loss over all answer tokens; ``"question"`` averages it
            within each packed question first, then over questions, so every question weighs the same whatever
            its answer length (with ``"token"`` the few long descriptions carry about half the gradient).
    """
    text = batch["text"]
    labels, segment = text["labels"], text["segment"]
    use_slot = slot_head is not None and slot_weight > 0
    # the attention and slot terms need layer inputs
    supervised = ground_weight > 0 or query_weight > 0 or use_slot or measure_attention
    hidden, tokens, inputs = packed_forward(model, batch, (0, ground_layer) if supervised else None)
    embeds, inner = inputs if inputs is not None else (None, None)
    target = labels[:, 1:]
    where = target != -100
    logits = model.lm_head(hidden[:, :-1][where]).float()  # (n_answer_tokens, V): logits only where needed
    if loss_per == "token":
        lm = F.cross_entropy(logits, target[where])
    elif loss_per == "question":
        lm = per_question_mean(F.cross_entropy(logits, target[where], reduction="none"), where, segment[:, 1:])
    else:
        raise ValueError(f"loss_per must be 'token' or 'question', got {loss_per!r}")
    loss = lm
    metrics = {"lm_loss": float(lm.detach())}
    if patch_heads is not None and aux_weight > 0:
        l_patch, m_patch = patch_heads.loss(tokens, batch["patch"])
        loss = loss + aux_weight * l_patch
        metrics.update({"loss_patch": float(l_patch.detach()), "acc_color": m_patch["acc_color"],
                        "acc_shape": m_patch["acc_shape"]})
    if ground_weight > 0:
        l_ground, mass = grounding_loss(model, inner, batch, ground_layer, ground_referents, ground_per_head)
        loss = loss + ground_weight * l_ground
        metrics.update({"loss_ground": float(l_ground.detach()), "evidence_mass": mass})
    elif measure_attention:
        with torch.no_grad():
            metrics["evidence_mass"] = grounding_loss(model, inner, batch, ground_layer)[1]
    if query_weight > 0:
        l_query, words_mass = query_grounding_loss(model, embeds, batch, 0, query_heads)
        loss = loss + query_weight * l_query
        metrics.update({"loss_query": float(l_query.detach()), "query_mass": words_mass})
    elif measure_attention:
        with torch.no_grad():
            metrics["query_mass"] = query_grounding_loss(model, embeds, batch, 0, query_heads)[1]
    if use_slot:
        l_slot, slot_hit = slot_words_loss(slot_head, inner, batch)
        loss = loss + slot_weight * l_slot
        metrics.update({"loss_slot": float(l_slot.detach()), "slot_words_prob": slot_hit})
    metrics["loss"] = float(loss.detach())
    metrics["acc_answer_token"] = float((logits.detach().argmax(-1) == target[where]).float().mean())
    answers: list[tuple[str, bool]] = []
    if with_answers:
        pred = torch.full_like(target, -1)
        pred[where] = logits.detach().argmax(-1)
        answers = _answer_matches(pred, target, segment[:, 1:], batch["families"])
    return StepOutput(loss, metrics, answers)
