"""FastV: the kept tokens are the top of layer K-1's last-row attention, at their original positions."""

import pytest
import torch

import stepprune
from tests.stepprune.methods.inllm_reference import (
    assert_top_by,
    context,
    hf_outputs,
    kept_visual,
    pruned_prefill,
)


def _config(adapter):
    return {"budget": 64} if adapter.family == "llava" else {"ratio": 0.25}


@pytest.mark.parametrize("k", [2, 1])
def test_keeps_the_top_of_layer_k_minus_1_last_row_with_original_positions(adapter, eager, k):
    ctx = context(adapter, seed=4)
    method = stepprune.build_method("fastv", k=k, **_config(adapter))
    res = pruned_prefill(adapter, ctx, method)
    n = int(ctx.vision.num_tokens[0])
    kept = method.config.keep_count(n)
    assert res.visual_per_layer[0].tolist() == [n] * k + [kept] * (4 - k)

    # Reference: HF eager attention probabilities of layer k-1, last prompt position, mean over heads.
    out, start, n_img = hf_outputs(eager, ctx.prompt)
    assert n_img == n
    ref = out.attentions[k - 1][0, :, -1, start: start + n].float().mean(dim=0)
    index, pos = kept_visual(res)
    assert index.numel() == kept
    assert_top_by(ref, index)
    assert (index.diff() > 0).all()  # spatial order
    # Original position ids, gaps included (M-RoPE: all three axes of the original 3-D ids).
    orig = ctx.prompt.positions[..., 0, :] if ctx.prompt.positions.dim() == 3 else ctx.prompt.positions[0]
    orig = orig[..., ctx.prompt.attention_mask[0].bool()]
    assert torch.equal(pos, orig[..., start + index])


def test_prunes_once_at_prefill_and_decodes_from_the_pruned_cache(llava):
    ctx = context(llava, n=2, seed=1)
    out = stepprune.PrunedVLM(llava, stepprune.build_method("fastv", budget=100)).generate(ctx.prompt, 3)
    assert out.visual_per_layer.tolist() == [[576, 576, 100, 100]] * 2
    assert out.cached_visual_per_layer.tolist() == [[576, 576, 100, 100]] * 2


def test_no_budget_means_no_hook_and_bad_k_is_rejected(llava):
    assert stepprune.build_method("fastv").llm_hooks(context(llava)) == []
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        stepprune.build_method("fastv", k=0, budget=8)


def test_a_layer_beyond_the_model_is_a_clear_error_or_mapped(llava):
    ctx = context(llava)
    with pytest.raises(ValueError, match=r"fastv: k=\[7\] do not fit a 4-layer LLM \(valid: 1\.\.3\)"):
        stepprune.build_method("fastv", k=7, budget=8, layer_mapping="strict").llm_hooks(ctx)
    # "fit" maps 7 of 32 layers proportionally: floor(7 * 4 / 32 + 0.5) = 1.
    (hook,) = stepprune.build_method("fastv", k=7, budget=8).llm_hooks(ctx)
    assert hook.layer == 1 and hook.record_inputs == (0,)
