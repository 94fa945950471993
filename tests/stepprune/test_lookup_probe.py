"""stepprune.lookup_probe: a fresh lookup learns to find a described token exactly when its query holds the
description."""

import pytest
import torch

from stepprune.lookup_probe import LookupProbe, evidence_mass, fit_lookup

N_TOKENS, N_COLORS, N_SHAPES = 24, 4, 4


def _scenes(m: int, seed: int):
    """Tokens carry a (colour, shape) one-hot code plus noise; the question names one pair present, and its
    evidence is every token with that pair. Returns keys (m, N, 8 + 8), bags (m, 8), evidence (m, N)."""
    g = torch.Generator().manual_seed(seed)
    color = torch.randint(0, N_COLORS, (m, N_TOKENS), generator=g)
    shape = torch.randint(0, N_SHAPES, (m, N_TOKENS), generator=g)
    keys = torch.cat([torch.nn.functional.one_hot(color, N_COLORS), torch.nn.functional.one_hot(shape, N_SHAPES),
                      torch.randn(m, N_TOKENS, 8, generator=g)], dim=-1).float()
    target = torch.randint(0, N_TOKENS, (m,), generator=g)
    tc, ts = color[torch.arange(m), target], shape[torch.arange(m), target]
    bags = torch.cat([torch.nn.functional.one_hot(tc, N_COLORS), torch.nn.functional.one_hot(ts, N_SHAPES)], -1)
    evidence = (color == tc[:, None]) & (shape == ts[:, None])
    return keys, bags.float(), evidence


def _fit_and_measure(shuffle_queries: bool) -> float:
    keys, bags, evidence = _scenes(2048, seed=0)
    if shuffle_queries:  # the query no longer describes the target
        bags = bags[torch.randperm(len(bags), generator=torch.Generator().manual_seed(1))]
    torch.manual_seed(0)
    probe = LookupProbe(keys.shape[-1], bags.shape[-1], dim=16, query_norm=False)
    fit_lookup(probe, keys, bags, evidence, steps=300, lr=1e-2)
    vk, vb, ve = _scenes(512, seed=2)
    with torch.no_grad():
        return float(evidence_mass(probe(vk, vb), ve).mean())


def test_a_lookup_queried_by_the_description_finds_its_tokens():
    # chance is the evidence's share of the tokens, about 1/16 of them
    assert _fit_and_measure(shuffle_queries=False) > 0.8


def test_a_lookup_whose_query_does_not_describe_the_target_cannot():
    assert _fit_and_measure(shuffle_queries=True) < 0.3


def test_attention_rows_sum_to_one_and_mass_counts_only_the_evidence():
    probe = LookupProbe(6, 5, dim=4)
    att = probe(torch.randn(3, 7, 6), torch.randn(3, 5))
    assert att.shape == (3, 7) and torch.allclose(att.sum(-1), torch.ones(3))
    evidence = torch.zeros(3, 7, dtype=torch.bool)
    evidence[0, 2] = evidence[1, :] = True
    mass = evidence_mass(att, evidence)
    assert torch.allclose(mass, torch.stack([att[0, 2], torch.tensor(1.0), torch.tensor(0.0)]))


def test_questions_without_evidence_are_refused():
    keys, bags, evidence = _scenes(4, seed=0)
    evidence[1] = False
    with pytest.raises(ValueError, match="evidence"):
        fit_lookup(LookupProbe(keys.shape[-1], bags.shape[-1]), keys, bags, evidence, steps=1)
