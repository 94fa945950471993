"""Both stages' forward passes on a tiny model: finite losses, gradients exactly where each stage trains."""

import torch

from stepprune.backbones.pretrain.batches import make_batch
from stepprune.backbones.pretrain.curriculum import Curriculum, Phase
from stepprune.backbones.pretrain.objectives import ClsHeads, PatchHeads
from stepprune.backbones.pretrain.packing import QAPacker
from stepprune.backbones.pretrain.spec import build_backbone
from stepprune.backbones.pretrain.steps import language_step, vision_step

from .conftest import TINY


def _grads(module):
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


def test_vision_step_trains_tower_projector_and_heads_only():
    model, processor = build_backbone(TINY, seed=1)
    patch, cls = PatchHeads(TINY.text_hidden), ClsHeads(TINY.vision_hidden)
    batch = make_batch(Curriculum([Phase(1, 1, 6)], stage=1).images(0, 2), processor)
    out = vision_step(model, patch, cls, batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and {"acc_shape", "box_l1_px", "acc_cls_count"} <= set(out.metrics)
    assert all(_grads(model.model.multi_modal_projector)) and all(_grads(cls)) and any(_grads(patch))
    assert any(_grads(model.model.vision_tower))
    assert not any(_grads(model.model.language_model)) and not any(_grads(model.lm_head))


def test_language_step_with_a_frozen_tower():
    model, processor = build_backbone(TINY, seed=1)
    model.model.vision_tower.requires_grad_(False)
    patch = PatchHeads(TINY.text_hidden)
    packer = QAPacker(processor, TINY.num_patches)
    batch = make_batch(Curriculum([Phase(1, 1, 6)], stage=2, questions_per_image=4).images(0, 2), processor,
                       packer)
    out = language_step(model, patch, batch, aux_weight=0.5, with_answers=True)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.metrics["loss"] > out.metrics["lm_loss"]
    assert len(out.answers) == sum(len(f) for f in batch["families"])
    assert all(isinstance(ok, bool) for _, ok in out.answers)
    assert any(_grads(model.model.language_model)) and any(_grads(model.model.multi_modal_projector))
    assert all(p.grad is None for p in model.model.vision_tower.parameters())


def test_answer_attention_is_the_models_own_attention(tiny_pretrain):
    from stepprune.backbones.pretrain.steps import answer_attention, grounding_loss, packed_forward

    model, processor = tiny_pretrain
    model.eval()
    packer = QAPacker(processor, TINY.num_patches)
    batch = make_batch(Curriculum([Phase(1, 1, 6)], stage=2, questions_per_image=3).images(0, 2), processor, packer)
    with torch.no_grad():
        _, _, inner = packed_forward(model, batch, layer_input=1)
        att, where = answer_attention(model, inner, batch, layer=1)
        loss, mass = grounding_loss(model, inner, batch, layer=1)
    assert att.shape == (sum(len(f) for f in batch["families"]), 576)
    assert torch.isfinite(loss) and 0 < mass < 1
    text = batch["text"]
    P = len(packer.prefix)
    model.set_attn_implementation("eager")
    try:
        for row, (b, seg) in zip(att, where):
            sel = text["segment"][b] == seg
            ids = torch.cat([text["input_ids"][b, :P], text["input_ids"][b][sel]])[None]
            labels = torch.cat([text["labels"][b, :P], text["labels"][b][sel]])
            q = int((labels != -100).nonzero()[0]) - 1  # the slot that predicts the first answer token
            with torch.no_grad():
                ref = model(input_ids=ids, pixel_values=batch["pixel_values"][b: b + 1], output_attentions=True)
            expected = ref.attentions[1][0, :, q].mean(dim=0)[ids[0] == model.config.image_token_id]
            torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-4)
    finally:
        model.set_attn_implementation("sdpa")


def test_language_step_loss_per_question_and_bad_value():
    import pytest

    model, processor = build_backbone(TINY, seed=1)
    packer = QAPacker(processor, TINY.num_patches)
    # descriptions among one-word answers: with answers of one length the two means are the same number
    phase = Phase(1, 1, 6, family_weights={"describe": 1.0, "counting": 1.0})
    batch = make_batch(Curriculum([phase], stage=2, questions_per_image=4).images(0, 2), processor, packer)
    answered = batch["text"]["labels"][:, 1:] != -100
    lengths = torch.unique(batch["text"]["segment"][:, 1:][answered], return_counts=True)[1]
    assert len(set(lengths.tolist())) > 1
    torch.manual_seed(0)
    torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    by_token = language_step(model, None, batch).metrics["lm_loss"]
    by_question = language_step(model, None, batch, loss_per="question")
    assert torch.isfinite(by_question.loss) and abs(by_question.metrics["lm_loss"] - by_token) > 1e-3
    with pytest.raises(ValueError, match="loss_per"):
        language_step(model, None, batch, loss_per="image")


def test_referent_grounding_puts_each_referent_on_its_own_head(tiny_pretrain):
    from stepprune.backbones.pretrain.steps import answer_attention, grounding_loss, packed_forward

    model, processor = tiny_pretrain
    packer = QAPacker(processor, TINY.num_patches)
    phase = Phase(1, 2, 4, family_weights={"relation": 1.0, "counting": 1.0})
    batch = make_batch(Curriculum([phase], stage=2, questions_per_image=4).images(0, 3), processor, packer)
    # Each referent's evidence is its own patches; their union is the question's evidence.
    for evs, refs in zip(batch["evidence"], batch["referent_evidence"]):
        for ev, ref in zip(evs, refs):
            assert sorted({p for r in ref for p in r}) == ev
    assert any(len(r) == 2 for refs in batch["referent_evidence"] for r in refs)
    with torch.no_grad():
        _, _, inner = packed_forward(model, batch, layer_input=1)
        heads, where = answer_attention(model, inner, batch, layer=1, per_head=True)
        mean, _ = answer_attention(model, inner, batch, layer=1)
        union, _ = grounding_loss(model, inner, batch, layer=1)
        per_ref, _ = grounding_loss(model, inner, batch, layer=1, referent_families=["relation"])
    torch.testing.assert_close(heads.mean(dim=1), mean)
    expected = []
    for row, (b, seg) in zip(heads, where):
        fam, refs = batch["families"][b][seg - 1], batch["referent_evidence"][b][seg - 1]
        if fam == "relation":  # head 0 on the shape asked about, head 1 on the one it is compared with
            expected.append(-(torch.log(row[0, refs[0]].sum() + 1e-6) + torch.log(row[1, refs[1]].sum() + 1e-6)) / 2)
        elif batch["evidence"][b][seg - 1]:
            expected.append(-torch.log(row.mean(dim=0)[batch["evidence"][b][seg - 1]].sum() + 1e-6))
    torch.testing.assert_close(per_ref, torch.stack(expected).mean())
    assert not torch.isclose(per_ref, union)


def _step_trains_attention(family: str, layer: int, **terms) -> dict[str, float]:
    """One language step of a fresh tiny model on ``family`` questions with the given attention terms: the terms
    add to the loss and train the layer's queries and keys. Returns the step's metrics."""
    model, processor = build_backbone(TINY, seed=1)
    model.model.vision_tower.requires_grad_(False)
    packer = QAPacker(processor, TINY.num_patches)
    phase = Phase(1, 2, 3, family_weights={family: 1.0})
    batch = make_batch(Curriculum([phase], stage=2, questions_per_image=2).images(0, 2), processor, packer)
    out = language_step(model, None, batch, **terms)
    out.loss.backward()
    assert out.metrics["loss"] > out.metrics["lm_loss"]
    attn = model.model.language_model.layers[layer].self_attn
    assert attn.q_proj.weight.grad.abs().sum() > 0 and attn.k_proj.weight.grad.abs().sum() > 0
    return out.metrics


def test_language_step_referent_grounding_trains_the_layer():
    metrics = _step_trains_attention("relation", 1, ground_weight=1.0, ground_layer=1, ground_referents=["relation"])
    assert 0 < metrics["evidence_mass"] < 1


def test_per_head_grounding_grounds_every_head(tiny_pretrain):
    from stepprune.backbones.pretrain.steps import answer_attention, grounding_loss, packed_forward

    model, processor = tiny_pretrain
    packer = QAPacker(processor, TINY.num_patches)
    phase = Phase(1, 2, 4, family_weights={"attribute": 1.0, "counting": 1.0})
    batch = make_batch(Curriculum([phase], stage=2, questions_per_image=4).images(0, 3), processor, packer)
    with torch.no_grad():
        _, _, inner = packed_forward(model, batch, layer_input=1)
        heads, where = answer_attention(model, inner, batch, layer=1, per_head=True)
        mean_loss, mean_mass = grounding_loss(model, inner, batch, layer=1)
        each_loss, each_mass = grounding_loss(model, inner, batch, layer=1, per_head=True)
    expected = [-torch.log(row[:, batch["evidence"][b][seg - 1]].sum(dim=-1) + 1e-6).mean()
                for row, (b, seg) in zip(heads, where) if batch["evidence"][b][seg - 1]]
    torch.testing.assert_close(each_loss, torch.stack(expected).mean())
    # -log is convex: the mean of per-head -log masses is at least -log of the mean mass, strictly unless the
    # heads agree; the reported mass is the head mean either way
    assert each_loss > mean_loss and abs(each_mass - mean_mass) < 1e-6


def test_query_grounding_reads_the_answer_slot_on_the_named_words(tiny_pretrain):
    from stepprune.backbones.pretrain.steps import _answer_rows, packed_forward, query_grounding_loss

    model, processor = tiny_pretrain
    packer = QAPacker(processor, TINY.num_patches)
    phase = Phase(1, 2, 4, family_weights={"attribute": 1.0, "counting": 1.0, "existence": 1.0})
    batch = make_batch(Curriculum([phase], stage=2, questions_per_image=4).images(0, 3), processor, packer)
    batch["text"]["query_words"][0][batch["text"]["segment"][0] == 1] = False  # a question that names nothing
    with torch.no_grad():
        _, _, embeds = packed_forward(model, batch, layer_input=0)
        rows, slots = _answer_rows(model, embeds, batch, 0)
        loss_all, mass_all = query_grounding_loss(model, embeds, batch, 0)
        loss_one, _ = query_grounding_loss(model, embeds, batch, 0, heads=1)
    words, segment = batch["text"]["query_words"], batch["text"]["segment"]
    expected, named = [], 0
    for a, (b, starts) in zip(rows, slots):
        for i, slot in enumerate(starts):
            cols = words[b] & (segment[b] == segment[b, slot])
            named += bool(cols.any())
            if cols.any():
                expected.append(-torch.log(a[i][:, cols].sum(-1).mean() + 1e-6))
    assert 0 < named < sum(len(starts) for _, starts in slots)  # the question that names nothing is left out
    torch.testing.assert_close(loss_all, torch.stack(expected).mean())
    assert 0 < mass_all < 1 and not torch.isclose(loss_one, loss_all)


def test_language_step_query_term_trains_layer_zero():
    metrics = _step_trains_attention("attribute", 0, query_weight=1.0)
    assert 0 < metrics["query_mass"] < 1 and "evidence_mass" not in metrics


def test_slot_words_loss_reads_each_answer_slot_against_its_named_words(tiny_pretrain):
    from stepprune.backbones.pretrain.objectives import SlotWordsHead
    from stepprune.backbones.pretrain.steps import answer_slots, packed_forward, slot_words_loss

    model, processor = tiny_pretrain
    packer = QAPacker(processor, TINY.num_patches)
    phase = Phase(1, 2, 4, family_weights={"attribute": 1.0, "counting": 1.0, "existence": 1.0})
    batch = make_batch(Curriculum([phase], stage=2, questions_per_image=4).images(0, 3), processor, packer)
    text = batch["text"]
    text["query_words"][0][text["segment"][0] == 1] = False  # a question that names nothing
    torch.manual_seed(0)
    head = SlotWordsHead(TINY.text_hidden, model.config.text_config.vocab_size).requires_grad_(False)
    with torch.no_grad():
        _, _, inner = packed_forward(model, batch, layer_input=1)
        loss, prob = slot_words_loss(head, inner, batch)
    expected, probs, slots = [], [], 0
    for b in range(inner.shape[0]):
        for slot in answer_slots(text["labels"][b]).tolist():
            slots += 1
            named = set(text["input_ids"][b][text["query_words"][b] & (text["segment"][b] == text["segment"][b, slot])]
                        .tolist())
            if named:
                logp = head(inner[b, slot][None]).log_softmax(-1)[0]
                expected.append(-sum(logp[i] for i in named) / len(named))
                probs.append(sum(logp[i].exp() for i in named))
    assert 0 < len(expected) < slots  # the question that names nothing is left out
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    assert abs(prob - float(torch.stack(probs).mean())) < 1e-5


def test_language_step_slot_term_trains_the_layers_below_the_lookup_and_its_head():
    from stepprune.backbones.pretrain.objectives import SlotWordsHead

    model, processor = build_backbone(TINY, seed=1)
    model.model.vision_tower.requires_grad_(False)
    packer = QAPacker(processor, TINY.num_patches)
    batch = make_batch(Curriculum([Phase(1, 2, 3, family_weights={"attribute": 1.0})], stage=2,
                                  questions_per_image=2).images(0, 2), processor, packer)
    head = SlotWordsHead(TINY.text_hidden, model.config.text_config.vocab_size)
    out = language_step(model, None, batch, ground_layer=1, slot_head=head, slot_weight=1.0)
    assert out.metrics["loss"] > out.metrics["lm_loss"] and 0 < out.metrics["slot_words_prob"] < 1
    model.zero_grad()
    head.zero_grad()
    # only the slot term: layer 0 (what gathers the words) and the head get its gradient, layer 1 onwards not
    from stepprune.backbones.pretrain.steps import packed_forward, slot_words_loss

    _, _, inner = packed_forward(model, batch, layer_input=1)
    slot_words_loss(head, inner, batch)[0].backward()
    layers = model.model.language_model.layers
    assert layers[0].self_attn.v_proj.weight.grad.abs().sum() > 0 and all(_grads(head))
    assert all(p.grad is None or not p.grad.any() for p in layers[1].parameters())
    off = language_step(model, None, batch, ground_layer=1, slot_head=head, slot_weight=0.0)
    assert "loss_slot" not in off.metrics


def test_answer_slots_are_the_last_prompt_slot_before_each_answer():
    from stepprune.backbones.pretrain.steps import answer_slots

    labels = torch.tensor([-100, -100, 5, 6, -100, -100, -100, 7, -100])
    assert answer_slots(labels).tolist() == [1, 6]
