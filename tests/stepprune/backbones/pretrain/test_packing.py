"""Multi-QA packing: the same ids as the evaluation path, and the same logits as asking each question alone."""

import numpy as np
import torch

from stepprune.backbones.preprocess import Preprocessor, single_turn
from stepprune.backbones.pretrain.batches import make_batch
from stepprune.backbones.pretrain.packing import QAPacker, collate_packed, segment_mask
from stepprune.backbones.pretrain.steps import packed_forward
from stepprune.data.synthvqa import SynthVQAConfig, make_sample


def test_segments_are_exactly_the_single_question_encodings(tiny_pretrain):
    _, processor = tiny_pretrain
    pre = Preprocessor(processor, processor.tokenizer.convert_tokens_to_ids("<image>"))
    packer = QAPacker(processor, 576)
    P = len(packer.prefix)
    for index in range(3):
        s = make_sample(SynthVQAConfig(seed=0), "train", index)
        packed = packer.pack([(q.prompt, q.answer, q.family) for q in s.questions])
        assert packed.families == [q.family for q in s.questions]
        for k, q in enumerate(s.questions):
            ref = pre.encode_one(s.rendered.to_pil(), single_turn(q.prompt, q.answer))
            seg = packed.segment == k + 1
            assert np.array_equal(np.concatenate([packed.input_ids[:P], packed.input_ids[seg]]), ref["input_ids"])
            assert np.array_equal(np.concatenate([packed.labels[:P], packed.labels[seg]]), ref["labels"])
            assert np.array_equal(packed.positions[seg], np.arange(P, len(ref["input_ids"])))


def test_mask_isolates_segments_and_padding():
    seg = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    m = segment_mask(seg)[0, 0]
    assert m[3, :4].tolist() == [True, True, True, True] and not m[3, 4:].any()
    assert m[5].tolist() == [True, True, False, False, True, True, False]
    assert not m[2, 3]  # causal within a segment
    assert m[6].tolist() == [False] * 6 + [True]  # padding only sees itself


def test_packed_logits_match_asking_each_question_alone(tiny_pretrain):
    model, processor = tiny_pretrain
    model.eval()
    packer = QAPacker(processor, 576)
    images = [(SynthVQAConfig(seed=0, max_objects=6, questions_per_image=4), i) for i in range(2)]
    batch = make_batch(images, processor, packer)
    with torch.no_grad():
        hidden, _, _ = packed_forward(model, batch)
        packed_logits = model.lm_head(hidden)
    P = len(packer.prefix)
    text = batch["text"]
    for b in range(2):
        for k in range(int(text["segment"][b].max())):
            seg = text["segment"][b] == k + 1
            ids = torch.cat([text["input_ids"][b, :P], text["input_ids"][b][seg]])[None]
            with torch.no_grad():
                ref = model(input_ids=ids, pixel_values=batch["pixel_values"][b: b + 1]).logits[0, P:]
            torch.testing.assert_close(packed_logits[b][seg], ref, atol=1e-4, rtol=1e-4)


def test_collate_pads_right_with_ignored_labels():
    from stepprune.backbones.pretrain.packing import PackedQA

    rows = [PackedQA(np.array([5, 6, 7]), np.array([-100, -100, 7]), np.array([0, 1, 1]), np.array([0, 1, 1]),
                     ["x"]),
            PackedQA(np.array([5]), np.array([-100]), np.array([0]), np.array([0]), [])]
    out = collate_packed(rows, pad_token_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert out["labels"][1].tolist() == [-100, -100, -100] and out["segment"][1].tolist() == [0, -1, -1]


def test_batch_families_pack_only_those_questions_of_the_same_images(tiny_pretrain):
    _, processor = tiny_pretrain
    packer = QAPacker(processor, 576)
    images = [(SynthVQAConfig(seed=0, max_objects=3, questions_per_image=8), i) for i in range(4)]
    full = make_batch(images, processor, packer)
    yes_no = make_batch(images, processor, packer, families={"existence", "mme"})
    assert torch.equal(full["pixel_values"], yes_no["pixel_values"])
    for fams_all, fams in zip(full["families"], yes_no["families"]):
        assert fams == [f for f in fams_all if f in ("existence", "mme")]
    assert sum(map(len, yes_no["families"])) > 0
    answers = yes_no["text"]["labels"][yes_no["text"]["labels"] != -100]
    yes_no_ids = {processor.tokenizer.convert_tokens_to_ids(t) for t in processor.tokenizer.tokenize(" yes no")}
    assert set(answers.tolist()) <= yes_no_ids | {processor.tokenizer.eos_token_id}


def test_query_words_are_the_names_on_the_question_line(tiny_pretrain):
    _, processor = tiny_pretrain
    packer = QAPacker(processor, 576)
    tok = processor.tokenizer
    prompts = {
        "Is the small blue circle above or below the medium star?\nAnswer the question using a single word.":
            ["small", "blue", "circle", "medium", "star"],
        "What word is written in red?\nReference OCR token: gift, lamp\nAnswer with one word.": ["red"],
        "Where is the large yellow diamond?\nA. top left\nB. the red star\nAnswer with the option's letter.":
            ["large", "yellow", "diamond"],
        "How many objects are there?\nAnswer the question using a single word or phrase.": [],
    }
    packed = packer.pack([(p, "red", "attribute") for p in prompts])
    for k, names in enumerate(prompts.values()):
        seg = packed.segment == k + 1
        marked = tok.convert_ids_to_tokens(packed.input_ids[seg & packed.query_words].tolist())
        assert [t.lstrip("Ġ") for t in marked] == names  # the answer "red" is never marked
    assert not packed.query_words[packed.segment == 0].any()
    batch = collate_packed([packed, packer.pack([("What size is the red star?", "large", "attribute")])], 0)
    assert batch["query_words"].dtype == torch.bool
    assert int(batch["query_words"][1].sum()) == 2 and not batch["query_words"][1, len(packed.input_ids):].any()
