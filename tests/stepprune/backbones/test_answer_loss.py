"""Answer-token NLL per token or per question: span numbering, the per-question mean, and the adapter's lm_loss
over multi-turn conversations (one long answer must not outweigh the short ones)."""

import pytest
import torch
from torch.nn import functional as F

from stepprune.backbones.answer_loss import answer_spans, per_question_mean
from tests.conftest import make_images


def test_answer_spans_number_each_run_of_labelled_slots():
    where = torch.tensor([[False, True, True, False, True, False, True],
                          [True, False, False, False, False, False, False]])
    assert answer_spans(where).tolist() == [[0, 1, 1, 0, 2, 0, 3], [1, 0, 0, 0, 0, 0, 0]]


def test_per_question_mean_weighs_every_question_the_same():
    # Two rows; row 0 holds question 1 (1 answer token) and question 2 (3 tokens); row 1 its question 1 (2 tokens).
    # Segment ids repeat across rows, so they must not share a bucket.
    where = torch.tensor([[False, True, False, True, True, True], [True, True, False, False, False, False]])
    segment = torch.tensor([[1, 1, 2, 2, 2, 2], [1, 1, 0, 0, 0, 0]])
    torch.manual_seed(0)
    logits, target = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    tok = F.cross_entropy(logits, target, reduction="none")
    expected = (tok[0] + tok[1:4].mean() + tok[4:6].mean()) / 3
    assert torch.allclose(per_question_mean(tok, where, segment), expected)
    assert not torch.allclose(expected, tok.mean())  # the two averages differ here, so the test can fail
    per = per_question_mean(tok, where, segment, per_sample=True)
    assert torch.allclose(per, torch.stack([(tok[0] + tok[1:4].mean()) / 2, tok[4:6].mean()]))


def test_lm_loss_per_question_over_multi_turn_conversations(llava):
    convs = [
        [{"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"},
         {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "a big red circle above a small blue "
                                                                              "square and the word pen in green"}],
        [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "3"}],
    ]
    prompt = llava.prepare_conversations(make_images(2), convs)
    vis = llava.vision_features(prompt)
    res = llava.forward(llava.splice(prompt, llava.keep_all(vis), vis))
    target = res.state.labels[:, 1:]
    where = target != -100
    logits = llava.runner.logits(res.hidden[:, :-1][where]).float()
    tok = F.cross_entropy(logits, target[where], reduction="none")
    spans = answer_spans(where)
    assert spans.max(dim=1).values.tolist() == [2, 1]  # two answers in the first conversation, one in the second
    means = [tok[(spans[where] == s) & (where.nonzero()[:, 0] == b)].mean() for b, s in ((0, 1), (0, 2), (1, 1))]
    by_question = llava.lm_loss(res, loss_per="question")
    assert by_question == pytest.approx(float(sum(means) / 3), abs=1e-5)
    assert llava.lm_loss(res) == pytest.approx(float(tok.mean()), abs=1e-5)
    assert abs(float(by_question) - float(tok.mean())) > 1e-3  # the long answer weighs less: the two differ
    per = llava.lm_loss(res, per_sample=True, loss_per="question")
    assert per.tolist() == pytest.approx([float((means[0] + means[1]) / 2), float(means[2])], abs=1e-5)
    with pytest.raises(ValueError, match="loss_per"):
        llava.lm_loss(res, loss_per="image")
