"""PyramidDrop: per-stage counts follow lambda, ranking uses the next layer's attention, positions re-indexed."""

import dataclasses

import pytest
import torch

import stepprune
from stepprune.backbones.types import VISUAL
from stepprune.methods.pdrop import average_fraction, solve_lambda
from tests.stepprune.backbones.reference import cache_free_greedy
from tests.stepprune.methods.inllm_reference import assert_top_by, context, hf_outputs, kept_visual, pruned_prefill


def test_stage_counts_follow_lambda_and_positions_are_reindexed(adapter, lam=0.3):
    ctx = context(adapter, n=2, seed=3)
    res = pruned_prefill(adapter, ctx, stepprune.build_method("pdrop", lam=lam, layers=(1, 2, 3)))
    for b, n in enumerate(ctx.vision.num_tokens.tolist()):
        assert res.visual_per_layer[b].tolist() == [n, int(n * lam), int(n * lam ** 2), int(n * lam ** 3)]
        st = res.state
        v = st.valid[b]
        pos = st.positions[:, b] if st.positions.dim() == 3 else st.positions[b][None]
        for axis in pos:  # contiguous 0..L'-1 over the real slots (every M-RoPE axis alike)
            assert axis[v].tolist() == list(range(int(v.sum())))
        index, _ = kept_visual(res, b)
        assert (index.diff() > 0).all()  # spatial order


def test_default_lambda_and_boundaries_map_onto_the_tiny_depth(llava):
    ctx = context(llava)
    # Official default: lam = 0.5 at (8, 16, 24) -> layers (1, 2, 3) of 4.
    res = pruned_prefill(llava, ctx, stepprune.build_method("pdrop", lam=0.5))
    assert res.visual_per_layer[0].tolist() == [576, 288, 144, 72]
    # Budget 64: (2, 8, 16, 24) with lam = 0.196 (solved on 32 layers); 2 -> layer 1 merges with 8 -> layer 1,
    # whose deeper stage (lam^2) applies: int(576 * lam^s) for s = 2, 3, 4.
    res = pruned_prefill(llava, ctx, stepprune.build_method("pdrop", budget=64))
    assert res.visual_per_layer[0].tolist() == [576, int(576 * 0.196 ** 2), int(576 * 0.196 ** 3),
                                                int(576 * 0.196 ** 4)]
    with pytest.raises(ValueError, match=r"pdrop: layers=\[2, 8, 16, 24\] do not fit a 4-layer LLM"):
        stepprune.build_method("pdrop", budget=64, layer_mapping="strict").llm_hooks(ctx)


def test_ranks_with_the_boundary_layers_own_attention(adapter, eager):
    # The first stage at layer 1 ranks with layer 1's projections on its (unpruned) input: that is exactly HF's
    # eager attention of layer 1, last prompt position, mean over heads.
    ctx = context(adapter, seed=8)
    res = pruned_prefill(adapter, ctx, stepprune.build_method("pdrop", ratios=(0.25,), layers=(1,)))
    n = int(ctx.vision.num_tokens[0])
    out, start, _ = hf_outputs(eager, ctx.prompt)
    ref = out.attentions[1][0, :, -1, start: start + n].float().mean(dim=0)
    index, _ = kept_visual(res)
    assert index.numel() == int(n * 0.25)
    assert_top_by(ref, index)


def test_average_matched_lambda_reproduces_the_cards_constants():
    for budget, lam in [(192, 0.581), (128, 0.437), (64, 0.196)]:
        assert solve_lambda(budget / 576, (2, 8, 16, 24), 32) == lam
        assert abs(average_fraction(lam, (2, 8, 16, 24), 32) * 576 - budget) < 0.5
    assert solve_lambda(64 / 576, (2, 8, 16, 24), 28) != 0.196  # solved for the model actually run
    with pytest.raises(ValueError, match="cannot be matched"):
        solve_lambda(64 / 576, (8, 16, 24), 32)  # 8 full layers of 32 already average 144 tokens


def _frozen(hooks):
    """The same hooks, but every later call replays the first call's selection (by original visual index)."""
    out = []
    for h in hooks:
        memo = {}

        def select(ctx, h=h, memo=memo):
            st = ctx.state
            if "kept" not in memo:
                keep = h.select(ctx)
                memo["kept"] = [set(st.visual_index[b][keep[b] & (st.segment[b] == VISUAL)].tolist())
                                for b in range(keep.shape[0])]
            return torch.stack([torch.isin(st.visual_index[b], torch.tensor(sorted(k), dtype=torch.long))
                                for b, k in enumerate(memo["kept"])])

        out.append(dataclasses.replace(h, select=select))
    return out


def test_decoding_continues_from_the_shortened_length(llava):
    ctx = context(llava, n=2, seed=5)
    method = stepprune.build_method("pdrop", lam=0.5, layers=(1, 3))
    out = stepprune.PrunedVLM(llava, method).generate(ctx.prompt, 4)
    assert out.cached_visual_per_layer.tolist() == [[576, 288, 288, 144]] * 2
    # Cached decoding (positions shifted per stage) equals re-running the whole pruned prefill at every step with
    # the prefill's selection (PDrop selects once, at prefill).
    inputs, _ = stepprune.PrunedVLM(llava, method).llm_inputs(ctx)
    ref = cache_free_greedy(llava, inputs, 4, drops=_frozen(method.llm_hooks(ctx)))
    assert torch.equal(out.tokens, ref[:, : out.tokens.shape[1]])


def test_qwen_original_positions_keep_the_mrope_ids(qwen):
    ctx = context(qwen, seed=2)
    res = pruned_prefill(qwen, ctx, stepprune.build_method("pdrop", lam=0.5, layers=(2,), positions="original"))
    index, pos = kept_visual(res)
    keep = ctx.prompt.attention_mask[0].bool()
    start = int((ctx.prompt.input_ids[0][keep] == qwen.image_token_id).nonzero()[0])
    assert torch.equal(pos, ctx.prompt.positions[:, 0][:, keep][:, start + index])
    assert int((res.state.segment[0] == VISUAL).sum()) == 72


def test_config_errors():
    with pytest.raises(ValueError, match="give one of budget/ratio, lam or ratios"):
        stepprune.build_method("pdrop", budget=64, lam=0.5)
    with pytest.raises(ValueError, match="2 ratios for 3 stage boundaries"):
        stepprune.build_method("pdrop", ratios=(0.5, 0.25))
    with pytest.raises(ValueError, match="strictly increasing"):
        stepprune.build_method("pdrop", lam=0.5, layers=(2, 2))
