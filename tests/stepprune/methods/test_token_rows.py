"""Index and row bookkeeping of the pre-LLM methods."""

import torch

from stepprune.methods.token_rows import complement, pad_index_rows, stack_rows


def test_complement_and_stack_rows():
    assert complement(torch.tensor([4, 0, 2]), 6).tolist() == [1, 3, 5]
    out = stack_rows([torch.ones(2, 3), torch.ones(0, 3)], [torch.tensor([5, 1]), torch.zeros(0, dtype=torch.long)])
    assert out.embeds.shape == (2, 2, 3) and out.count.tolist() == [2, 0]
    assert out.source_index.tolist() == [[5, 1], [0, 0]] and out.embeds[1].abs().sum() == 0


def test_pad_index_rows():
    index, count = pad_index_rows([torch.tensor([3, 1, 4]), torch.zeros(0, dtype=torch.long), torch.tensor([7])],
                                  fill=-1)
    assert index.tolist() == [[3, 1, 4], [-1, -1, -1], [7, -1, -1]] and count.tolist() == [3, 0, 1]
