"""How the answer-token NLL is averaged: over every answer token of the batch, or per question.

SynthVQA's few "describe" answers are 100+ tokens long against 1-4 for every other question, so a mean over tokens
hands them about half the gradient (48 % of the training corpus's answer tokens, from 2.9 % of its questions).
``"question"`` averages each answer's tokens first, then over the answers, so every question weighs the same.
Selector training (:meth:`stepprune.BackboneAdapter.lm_loss`) and backbone pretraining share these reductions.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

LossPer = Literal["token", "question"]
LOSS_PER = get_args(LossPer)


def check_loss_per(loss_per: str) -> None:
    if loss_per not in LOSS_PER:
        raise ValueError(f"loss_per must be one of {LOSS_PER}, got {loss_per!r}")


def answer_spans(where: Tensor) -> Tensor:
    """Numbers the answers of each row: an answer is a maximal run of labelled slots.

    Args:
        where: (B, L) bool, True at the labelled (answer) slots.

    Returns:
        (B, L) long: 1, 2, ... on each row's first, second, ... answer; 0 off the answers.
    """
    before = torch.nn.functional.pad(where[:, :-1], (1, 0), value=False)
    starts = where & ~before
    return torch.cumsum(starts.long(), dim=1) * where.long()


def per_question_mean(token_loss: Tensor, where: Tensor, segment: Tensor, per_sample: bool = False) -> Tensor:
    """The mean over questions of each question's mean token loss.

    Args:
        token_loss: (T,) the loss at the T labelled slots, gathered row-major from ``where``.
        where: (B, L) bool, True at those T slots.
        segment: (B, L) long, the question each slot belongs to within its row (e.g. :func:`answer_spans`, or the
            packed segment ids of backbone pretraining).
        per_sample: return (B,), each row's mean over its own questions (every row needs one), instead of the
            batch's scalar mean over all its questions.
    """
    rows = where.nonzero()[:, 0]  # (T,) row of each labelled slot
    # one id per (row, question): questions of different rows never share a bucket
    per_row = int(segment.max()) + 1
    qid = rows * per_row + segment[where]
    unique_ids, inverse, counts = torch.unique(qid, return_inverse=True, return_counts=True)
    weighted = token_loss / counts[inverse].to(token_loss.dtype)  # each question's tokens sum to its mean
    if not per_sample:
        return weighted.sum() / counts.numel()
    batch = where.shape[0]
    questions = torch.bincount(unique_ids // per_row, minlength=batch)  # (B,) questions per row, exact
    if bool((questions == 0).any()):
        raise ValueError("a sample of the batch has no labelled tokens")
    sums = torch.zeros(batch, device=token_loss.device, dtype=weighted.dtype).index_add_(0, rows, weighted)
    return sums / questions.to(weighted.dtype)
