"""The controls: budgets respected, determinism, and what each one keeps."""

import pytest
import torch

import stepprune
from stepprune.methods.base import SelectionContext
from stepprune.methods.controls import grid_cells, lattice_indices
from tests.conftest import PROMPTS, make_images


def _ctx(adapter, n=3, seed=0, keys=("a", "b", "c")):
    prompt = adapter.prepare(make_images(n, seed=seed), PROMPTS[:n], keys=list(keys[:n]))
    return SelectionContext(adapter, prompt, adapter.vision_features(prompt))


@pytest.mark.parametrize("name", ["random", "uniform", "pool"])
def test_budget_is_respected_on_both_backbones(adapter, name):
    cfg = {"budget": 64} if adapter.family == "llava" else {"ratio": 0.3}
    out = stepprune.PrunedVLM(adapter, stepprune.build_method(name, cfg)).generate(
        adapter.prepare(make_images(3), PROMPTS, keys=["a", "b", "c"]), max_new_tokens=2)
    expected = 64 if adapter.family == "llava" else int(0.3 * 144)
    assert out.kept.tolist() == [expected] * 3
    assert out.visual_per_layer[:, 0].tolist() == [expected] * 3
    for idx in out.kept_index:
        assert len(set(idx)) == expected


def test_random_is_seeded_per_sample_not_per_batch_position(llava):
    m = stepprune.build_method("random", budget=10, seed=3)
    full = m.select(_ctx(llava))
    alone = m.select(_ctx(llava, n=1, keys=("b",)))  # sample "b" alone, at batch position 0
    assert torch.equal(full.source_index[1], alone.source_index[0])
    assert not torch.equal(full.source_index[0], full.source_index[1])
    other = stepprune.build_method("random", budget=10, seed=4).select(_ctx(llava))
    assert not torch.equal(full.source_index, other.source_index)
    assert (full.source_index.diff(dim=1) > 0).all()  # raster order


def test_uniform_lattice_is_even():
    idx = lattice_indices(24, 24, 64)
    rows, cols = idx // 24, idx % 24
    assert sorted(set(rows.tolist())) == [1, 4, 7, 10, 13, 16, 19, 22]
    assert sorted(set(cols.tolist())) == [1, 4, 7, 10, 13, 16, 19, 22]


@pytest.mark.parametrize("rows,cols,k", [(24, 24, 64), (24, 24, 128), (24, 24, 192), (12, 12, 43), (5, 7, 35)])
def test_grid_cells_tile_the_grid_into_exactly_k_cells(rows, cols, k):
    cell, centre = grid_cells(rows, cols, k)
    assert cell.unique().numel() == k and centre.unique().numel() == k
    assert torch.equal(cell[centre], torch.arange(k))  # each centre lies in its own cell


def test_pool_averages_cells_before_projection(llava):
    ctx = _ctx(llava, n=1)
    out = stepprune.build_method("pool", budget=64).select(ctx)
    cell, _ = grid_cells(24, 24, 64)
    first = ctx.vision.tokens[0][cell == 0].mean(0)
    torch.testing.assert_close(out.embeds[0, 0], llava.project(first[None, None])[0, 0], rtol=0, atol=1e-6)
    full = stepprune.build_method("pool", budget=576).select(ctx)  # one patch per cell: no pooling at all
    torch.testing.assert_close(full.embeds, ctx.projected(), rtol=0, atol=1e-6)


def test_blind_hands_no_visual_token_to_the_llm(adapter):
    out = stepprune.PrunedVLM(adapter, stepprune.build_method("blind")).generate(
        adapter.prepare(make_images(2), PROMPTS[:2]), max_new_tokens=2)
    assert out.kept.tolist() == [0, 0] and out.visual_per_layer.sum() == 0


def test_budget_larger_than_the_token_count_is_a_clear_error(llava):
    with pytest.raises(ValueError, match="sample 0: budget 700 exceeds its 576 visual tokens"):
        stepprune.build_method("random", budget=700).select(_ctx(llava))
