"""SparseVLM: raters, the per-budget schedule, scoring by the raters' attention, and recycled-token insertion."""

import pytest
import torch

import stepprune
from stepprune.backbones.hooks import PrefillDrop
from stepprune.backbones.types import SUFFIX, VISUAL
from stepprune.methods.sparsevlm import SparseVLMConfig, dpc_knn_merge, text_raters
from tests.stepprune.methods.inllm_reference import assert_top_by, context, hf_outputs, kept_visual, pruned_prefill


def _with_clusters(n_vis: int, k: int) -> int:
    """Image tokens after one stage: min(k, n - 1) kept + int((int(0.3 * dropped) + 1) / 10) + 1 clusters."""
    if k >= n_vis:
        return n_vis
    kept = min(k, n_vis - 1)
    recycled = int((n_vis - kept) * 0.3) + 1
    return kept + int(recycled / 10) + 1


def test_budget_presets_and_scaling():
    assert SparseVLMConfig(budget=192).counts(576) == (300, 200, 110)
    assert SparseVLMConfig(budget=128).counts(576) == (303, 110, 36)
    assert SparseVLMConfig(budget=64).counts(576) == (66, 30, 17)
    assert SparseVLMConfig(budget=64, schedule_variant="v2_0").counts(576) == (66, 34, 20)
    assert SparseVLMConfig(ratio=1 / 9).counts(144) == (66 * 144 // 576, 30 * 144 // 576, 17 * 144 // 576)
    with pytest.raises(ValueError, match=r"= 100 of 576\) has no schedule"):
        SparseVLMConfig(budget=100).counts(576)
    with pytest.raises(ValueError, match="not both"):
        SparseVLMConfig(budget=64, schedule=(1, 2, 3))
    with pytest.raises(ValueError, match="2 schedule entries for 3 pruning layers"):
        SparseVLMConfig(schedule=(100, 50))


def test_schedule_layers_and_recycled_tokens_on_both_backbones(adapter):
    # (2, 6, 15) of 32 layers -> pruning layers (0, 1, 2) of 4: the drops enter layers 1, 2, 3.
    cfg = {"budget": 64} if adapter.family == "llava" else {"ratio": 1 / 9}
    ctx = context(adapter, n=2, seed=1)
    method = stepprune.build_method("sparsevlm", **cfg)
    assert [h.layer for h in method.llm_hooks(ctx)] == [1, 2, 3]
    res = pruned_prefill(adapter, ctx, method)
    for b, n in enumerate(ctx.vision.num_tokens.tolist()):
        expected = [n]
        for k in method.config.counts(n):
            expected.append(_with_clusters(expected[-1], k))
        assert res.visual_per_layer[b].tolist() == expected
        assert expected[-1] > method.config.counts(n)[-1]  # more than nominal: the recycled clusters
    plain = pruned_prefill(adapter, ctx, stepprune.build_method("sparsevlm", recycle=False, **cfg))
    n = int(ctx.vision.num_tokens[0])
    assert plain.visual_per_layer[0].tolist() == [n, *method.config.counts(n)]


def test_recycled_tokens_follow_the_kept_ones_at_their_centres_positions(llava):
    ctx = context(llava, seed=2)
    method = stepprune.build_method("sparsevlm", layers=(1,), schedule=(40,))
    res = pruned_prefill(llava, ctx, method)
    clusters = _with_clusters(576, 40) - 40
    assert res.visual_per_layer[0].tolist() == [576, 576, 40 + clusters, 40 + clusters]
    st = res.state
    seg = st.segment[0][st.valid[0]]
    vis = (seg == VISUAL).nonzero().flatten()
    assert (vis.diff() == 1).all() and int(seg[vis[-1] + 1]) == SUFFIX  # one run, then the text
    index, pos = kept_visual(res)
    kept, extra = index[:40], index[40:]
    assert (kept.diff() > 0).all() and not torch.isin(extra, kept).any()  # spatial order; centres were dropped
    start = int((ctx.prompt.input_ids[0] == llava.image_token_id).nonzero()[0])  # slot in the (padded) prompt
    assert torch.equal(pos, ctx.prompt.positions[0][start + index])  # original ids; clusters take their centre's


def test_raters_are_the_text_tokens_above_mean_relevance(adapter):
    ctx = context(adapter, n=2, seed=3)
    method = stepprune.build_method("sparsevlm", layers=(1,), schedule=(10,))
    got = {}

    def probe(pctx):
        got["raters"] = method.raters(pctx)
        got["state"] = pctx.state
        return pctx.state.segment == VISUAL

    inputs, _ = stepprune.PrunedVLM(adapter, method).llm_inputs(ctx)
    adapter.runner.prefill(inputs, [PrefillDrop(2, probe, record_inputs=(0,))])
    proj = ctx.projected()
    for b in range(2):
        # Reference from the prompt itself: projected image tokens and the embeddings of the ids after the image.
        ids = ctx.prompt.input_ids[b][ctx.prompt.attention_mask[b].bool()]
        after = ids[int((ids == adapter.image_token_id).nonzero()[-1]) + 1:]
        text = adapter.embed_text(after[None])[0].float()
        n = int(ctx.vision.num_tokens[b])
        rel = torch.softmax(proj[b, :n].float() @ text.T, dim=1).mean(dim=0)
        st = got["state"]
        slots = (st.segment[b] == SUFFIX) & st.valid[b]
        assert torch.equal(got["raters"][b][slots], rel > rel.mean())
        assert not got["raters"][b][~slots].any()
        assert 0 < int(got["raters"][b].sum()) < after.numel()


def test_text_raters_pick_the_text_the_image_attends_to():
    text = torch.eye(4) * 3
    visual = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0.8, 0, 0.2, 0]])
    assert text_raters(visual, text).tolist() == [True, False, False, False]


def test_scores_are_the_raters_mean_attention(adapter, eager):
    # One stage at layer 1 (prunes layer 1's output): the kept tokens are the top of the raters' mean over heads
    # of HF's eager attention of layer 1.
    ctx = context(adapter, seed=6)
    method = stepprune.build_method("sparsevlm", layers=(1,), schedule=(200,), recycle=False)
    got = {}

    def probe(pctx):
        got["raters"] = method.raters(pctx)
        return pctx.state.segment == VISUAL

    inputs, _ = stepprune.PrunedVLM(adapter, method).llm_inputs(ctx)
    adapter.runner.prefill(inputs, [PrefillDrop(1, probe, record_inputs=(0,))])
    res = pruned_prefill(adapter, ctx, method)
    n = int(ctx.vision.num_tokens[0])
    out, start, _ = hf_outputs(eager, ctx.prompt)
    rows = got["raters"][0][-(out.attentions[1].shape[-1] - start - n):]  # raters among the text after the image
    att = out.attentions[1][0].float().mean(dim=0)[start + n:][rows]  # (raters, L)
    ref = att[:, start: start + n].mean(dim=0)
    index, _ = kept_visual(res)
    k = min(200 * n // 576, n - 1)
    assert index.numel() == k
    assert_top_by(ref, index)


def test_dpc_knn_finds_separated_blobs_and_averages_them():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    sizes = [5, 7, 9]
    x = torch.cat([c + 0.1 * torch.randn(s, 3, generator=g) for c, s in zip(centres, sizes)])
    x = x[torch.randperm(x.shape[0], generator=g)]
    merged, centre = dpc_knn_merge(x, 3)
    label = x.argmax(dim=1)
    assert sorted(label[centre].tolist()) == [0, 1, 2]  # one centre per blob
    for c in range(3):
        blob = x[label == label[centre[c]]]
        torch.testing.assert_close(merged[c], blob.sum(0) / (blob.shape[0] + 1e-6))
    again, centre2 = dpc_knn_merge(x, 3)
    assert torch.equal(centre, centre2) and torch.equal(merged, again)  # deterministic


def test_layers_beyond_the_model_are_an_error_under_strict_mapping(llava):
    msg = r"sparsevlm: layers=\[2, 6, 15\] do not fit a 4-layer LLM \(valid: 0\.\.2\)"
    with pytest.raises(ValueError, match=msg):
        stepprune.build_method("sparsevlm", budget=64, layer_mapping="strict").llm_hooks(context(llava))
