"""Can one attention lookup find the object a question names? A bilinear probe between two representations.

A decoder layer finds a question's object by one softmax over the visual tokens: its answer slot's query against
every patch's key. Whether that *can* work depends on what the two sides hold, not only on how the layer was
trained. This probe trains a fresh lookup of the same form (an RMSNorm and a linear map per side, a softmax over
the patches, plus a per-patch bias for "this is an object"), by ``-log`` of the attention mass on the question's
evidence patches, from a chosen query representation to a chosen key representation:

* keys: the projected visual tokens (what enters the LLM) or the visual tokens' state entering a decoder layer;
* queries: the bag of words the question names its object by (the description itself) or the answer slot's
  state entering that layer (what the layer's own query is computed from).

When a probe from the description reaches a high evidence mass and the probe from the answer slot's state stalls
where the LLM's own layer does, the keys are not the limit: the answer slot does not hold the description when
the lookup runs. ``jobs/bench_lookup_probe.py`` runs the comparison on SynthVQA's attribute questions.

Shapes: B questions, N visual tokens, Dk key width, Dq query width, d probe width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LookupProbe(nn.Module):
    """One single-head bilinear attention lookup with a per-patch bias.

    Args:
        key_dim: Dk, width of the key representation.
        query_dim: Dq, width of the query representation (the bag-of-words vocabulary size for a bag).
        dim: d, the lookup's width.
        query_norm: RMSNorm the query first (a hidden state); off for a bag of words, whose multi-hot rows the
            linear map turns into a sum of per-word vectors.
    """

    def __init__(self, key_dim: int, query_dim: int, dim: int = 32, query_norm: bool = True):
        super().__init__()
        self.key_norm = nn.RMSNorm(key_dim)
        self.key = nn.Linear(key_dim, dim, bias=False)
        self.objectness = nn.Linear(key_dim, 1)
        self.query_norm = nn.RMSNorm(query_dim) if query_norm else nn.Identity()
        self.query = nn.Linear(query_dim, dim, bias=False)
        self.scale = dim ** -0.5

    def forward(self, keys: Tensor, queries: Tensor) -> Tensor:
        """(B, N, Dk) keys and (B, Dq) queries -> (B, N) attention over the N tokens (rows sum to 1)."""
        k = self.key_norm(keys.float())
        q = self.query(self.query_norm(queries.float()))  # (B, d)
        logits = torch.einsum("bnd,bd->bn", self.key(k), q) * self.scale + self.objectness(k).squeeze(-1)
        return logits.softmax(dim=-1)


def evidence_mass(attention: Tensor, evidence: Tensor) -> Tensor:
    """(B, N) attention and (B, N) bool evidence masks -> (B,) attention mass on the evidence."""
    return (attention * evidence).sum(dim=-1)


def fit_lookup(probe: LookupProbe, keys: Tensor, queries: Tensor, evidence: Tensor, steps: int,
               batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Trains ``probe`` by ``-log`` evidence mass on minibatches drawn with replacement.

    Args:
        keys: (M, N, Dk), queries: (M, Dq), evidence: (M, N) bool; M training questions (every row needs
            at least one evidence token).

    Returns:
        The training loss of every step.
    """
    if not bool(evidence.any(dim=-1).all()):
        raise ValueError("every training question needs at least one evidence token")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        i = torch.randint(0, keys.shape[0], (batch_size,), generator=gen)
        loss = -torch.log(evidence_mass(probe(keys[i], queries[i]), evidence[i]) + 1e-6).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
