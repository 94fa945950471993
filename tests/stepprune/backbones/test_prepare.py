"""Prompt preparation: the chat template, the instruction mask, answer labels, and clear input errors."""

import pytest
import torch

from stepprune.backbones.types import VisualTokens
from tests.conftest import PROMPTS, make_images


def test_question_mask_marks_exactly_the_prompt_text(adapter):
    prompt = adapter.prepare(make_images(3), PROMPTS)
    for b, text in enumerate(PROMPTS):
        ids = prompt.input_ids[b][prompt.question_mask[b]]
        assert adapter.tokenizer.decode(ids) == text


def test_labels_cover_the_answer_and_eos_only(adapter):
    answers = ["blue", "7", "no"]
    prompt = adapter.prepare(make_images(3), PROMPTS, answers=answers)
    eos = adapter.tokenizer.eos_token_id
    for b, ans in enumerate(answers):
        lab = prompt.labels[b][prompt.labels[b] != -100]
        assert int(lab[-1]) == eos
        assert adapter.tokenizer.decode(lab[:-1]).strip() == ans
        # the prompt part is the same as without answers: the instruction mask is unchanged
        assert adapter.tokenizer.decode(prompt.input_ids[b][prompt.question_mask[b]]) == PROMPTS[b]


def test_lm_loss_is_finite_and_needs_labels(llava):
    prompt = llava.prepare(make_images(2), PROMPTS[:2], answers=["red", "3"])
    vision = llava.vision_features(prompt)
    loss = llava.lm_loss(llava.forward(llava.splice(prompt, llava.keep_all(vision), vision)))
    assert torch.isfinite(loss) and loss > 0
    unlabelled = llava.prepare(make_images(1), PROMPTS[:1])
    v = llava.vision_features(unlabelled)
    with pytest.raises(ValueError, match="no labels"):
        llava.lm_loss(llava.forward(llava.splice(unlabelled, llava.keep_all(v), v)))


def test_image_token_count_mismatch_is_a_clear_error(adapter):
    prompt = adapter.prepare(make_images(2), PROMPTS[:2])
    vision = adapter.vision_features(prompt)
    # Remove one image placeholder from sample 1: the prompt now disagrees with the vision tower.
    ids = prompt.input_ids.clone()
    where = (ids[1] == adapter.image_token_id).nonzero().flatten()
    ids[1, where[-1]] = adapter.tokenizer.convert_tokens_to_ids(adapter.tokenizer.eos_token)
    prompt.input_ids = ids
    with pytest.raises(ValueError, match=r"sample 1: image-token count mismatch: .* holds \d+ image tokens"):
        adapter.splice(prompt, adapter.keep_all(vision), vision)


def test_source_index_outside_the_image_is_rejected(llava):
    prompt = llava.prepare(make_images(1), PROMPTS[:1])
    vision = llava.vision_features(prompt)
    proj = llava.project(vision.tokens)
    bad = VisualTokens(proj[:, :2], torch.tensor([[0, 576]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="source index"):
        llava.splice(prompt, bad, vision, "original")


def test_mismatched_lengths_are_rejected(llava):
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        llava.prepare(make_images(2), PROMPTS[:1])


def test_multi_turn_conversation_masks_every_question_and_labels_every_answer(adapter):
    conv = [
        {"from": "human", "value": "<image>\nWhat color is the square?"},
        {"from": "gpt", "value": "blue"},
        {"from": "human", "value": "How many objects?"},
        {"from": "gpt", "value": "3"},
    ]
    prompt = adapter.prepare_conversations(make_images(1), [conv])
    tok = adapter.tokenizer
    q = tok.decode(prompt.input_ids[0][prompt.question_mask[0]])
    # A word's leading space may belong to the template; compare the words.
    assert "".join(q.split()) == "Whatcoloristhesquare?Howmanyobjects?"
    lab = prompt.labels[0]
    eos = tok.eos_token_id
    ends = (lab == eos).nonzero().flatten().tolist()
    assert len(ends) == 2  # one EOS per answer
    first = lab[: ends[0] + 1][lab[: ends[0] + 1] != -100]
    second = lab[ends[0] + 1: ends[1] + 1][lab[ends[0] + 1: ends[1] + 1] != -100]
    assert tok.decode(first[:-1]).strip() == "blue" and tok.decode(second[:-1]).strip() == "3"


def test_preprocessor_encodes_without_the_model(tiny_qwen_dir):
    from stepprune.backbones.preprocess import Preprocessor, collate, single_turn

    pre = Preprocessor.from_pretrained(tiny_qwen_dir)
    rows = [pre.encode_one(im, single_turn(p, "yes")) for im, p in zip(make_images(2), PROMPTS[:2])]
    batch = collate(rows, pre.tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 2 and batch["image_grid_thw"].tolist() == [[1, 24, 24]] * 2
    assert batch["attention_mask"][:, -1].all()  # left padding


def test_malformed_conversations_are_rejected(llava):
    with pytest.raises(ValueError, match="must start with a human turn"):
        llava.prepare_conversations(make_images(1), [[{"from": "gpt", "value": "x"}]])
    with pytest.raises(ValueError, match="turn 1: expected a assistant turn"):
        llava.prepare_conversations(make_images(1), [[{"from": "human", "value": "<image>\nq"},
                                                       {"from": "human", "value": "q2"}]])
