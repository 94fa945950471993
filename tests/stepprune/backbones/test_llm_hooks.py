"""In-LLM hooks: dropping tokens entering a layer, recomputed attention rows, and decode-time eviction."""

import pytest
import torch

import stepprune
from stepprune.backbones.hooks import AttentionBias, DecodeEvict, LayerEdit, PrefillDrop
from stepprune.backbones.types import VISUAL, VisualTokens
from tests.conftest import PROMPTS, make_images
from tests.stepprune.backbones.reference import cache_free_greedy


def _inputs(adapter, n=2, seed=0):
    prompt = adapter.prepare(make_images(n, seed=seed), PROMPTS[:n])
    vision = adapter.vision_features(prompt)
    return adapter.splice(prompt, adapter.keep_all(vision), vision), prompt


def _every_other_visual(ctx):
    st = ctx.state
    vis = st.segment == VISUAL
    rank = vis.long().cumsum(dim=1)
    return vis & (rank % 2 == 0)


def test_keep_all_hook_changes_nothing(adapter):
    inputs, _ = _inputs(adapter)
    plain = adapter.forward(inputs).hidden
    for positions in ("keep", "contiguous"):
        hooked = adapter.forward(inputs, [PrefillDrop(2, lambda ctx: ctx.state.segment == VISUAL,
                                                      positions=positions)]).hidden
        if adapter.family == "llava" or positions == "keep":  # unpruned LLaVA positions are already contiguous
            torch.testing.assert_close(hooked, plain, rtol=0, atol=1e-6)


def test_drop_at_layer_k_reaches_only_later_layers(adapter):
    inputs, _ = _inputs(adapter)
    n = int(inputs.num_visual[0])
    res = adapter.runner.prefill(inputs, [PrefillDrop(2, _every_other_visual)])
    assert res.visual_per_layer[0].tolist() == [n, n, n // 2, n // 2]
    # The dropped run equals a run whose layers >= 2 never saw those tokens: check via cache-free decoding.
    gen = adapter.generate(inputs, 4, drops=[PrefillDrop(2, _every_other_visual)])
    assert gen.visual_per_layer[0].tolist() == [n, n, n // 2, n // 2]
    # The survivors are the even-ranked visual tokens, reported by their original indices.
    assert gen.final_visual_index[0] == list(range(1, n, 2))
    ref = cache_free_greedy(adapter, inputs, 4, drops=[PrefillDrop(2, _every_other_visual)])
    assert torch.equal(gen.tokens[:, :1], ref[:, :1])


@pytest.mark.parametrize("positions", ["keep", "contiguous"])
def test_cached_decoding_after_an_in_llm_drop_matches_recomputation(llava, positions):
    inputs, _ = _inputs(llava, seed=3)
    drops = [PrefillDrop(1, _every_other_visual, positions=positions)]
    cached = llava.generate(inputs, 5, drops=drops).tokens
    ref = cache_free_greedy(llava, inputs, 5, drops=drops)
    assert torch.equal(cached, ref)


def test_inserting_extra_tokens_after_the_visual_run(llava):
    inputs, _ = _inputs(llava, n=1)
    D = inputs.embeds.shape[-1]

    def add_two(ctx):
        st = ctx.state
        extra = torch.zeros(1, 2, D)
        return LayerEdit(keep=st.segment == VISUAL, extra_hidden=extra,
                         extra_positions=torch.tensor([[5, 6]]), extra_index=torch.tensor([[5, 6]]))

    res = llava.runner.prefill(inputs, [PrefillDrop(2, add_two)])
    assert res.visual_per_layer[0].tolist() == [576, 576, 578, 578]
    seg = res.state.segment[0][res.state.valid[0]]
    vis_slots = (seg == VISUAL).nonzero().flatten()
    assert (vis_slots[1:] - vis_slots[:-1]).eq(1).all()  # extras sit right after the visual run


def test_attention_rows_equal_eager_attention(tiny_llava_dir, tiny_qwen_dir):
    # Rows recomputed from a layer's recorded input equal HF's eager attention probabilities.
    for path in (tiny_llava_dir, tiny_qwen_dir):
        eager = stepprune.load_backbone(path, attn_implementation="eager")
        inputs, prompt = _inputs(eager, n=1, seed=5)
        got = {}

        def probe(ctx):
            last = torch.full((1, 1), ctx.state.hidden.shape[1] - 1)
            got["rows"] = ctx.attention_rows(1, last)
            return ctx.state.segment == VISUAL

        eager.runner.prefill(inputs, [PrefillDrop(2, probe, record_inputs=(1,))])
        kw = dict(input_ids=prompt.input_ids, **prompt.pixel_inputs, **prompt.extra, output_attentions=True)
        if eager.family != "llava":
            eager.model.model.rope_deltas = None
        ref = eager.model(**kw).attentions[1][:, :, -1:, :]
        assert ref.numel() > 0  # eager really returned attention maps
        torch.testing.assert_close(got["rows"], ref.float(), rtol=0, atol=1e-5)


def test_record_inputs_is_required_for_attention_rows(llava):
    inputs, _ = _inputs(llava, n=1)

    def probe(ctx):
        ctx.attention_rows(1, torch.zeros(1, 1, dtype=torch.long))

    with pytest.raises(KeyError, match="record_inputs"):
        llava.runner.prefill(inputs, [PrefillDrop(2, probe)])


def test_decode_time_eviction_shrinks_the_cache(adapter):
    inputs, _ = _inputs(adapter, n=2, seed=9)
    n = int(inputs.num_visual[0])
    seen = []

    def evict_half(ctx):
        row, group = ctx.attention_row(1)  # the new token's attention at layer 1, over its cache
        assert row.shape[-1] == group.valid.shape[1]
        seen.append(int(((ctx.group.segment == VISUAL) & ctx.group.valid).sum(1)[0]))
        if ctx.step != 0:
            return None
        vis = ctx.group.segment == VISUAL
        rank = vis.long().cumsum(dim=1)
        return ~vis | (rank <= n // 2)

    # No EOS, so all 4 steps run whatever the random model says.
    out = adapter.runner.generate(inputs, 4, None, adapter.pad_token_id,
                                  evicts=[DecodeEvict(2, evict_half, record_inputs=(1,))])
    assert out.tokens.shape[1] == 4 and len(seen) == 3
    assert seen[0] == n and all(s == n // 2 for s in seen[1:])
    assert out.cached_visual_per_layer[0].tolist() == [n, n, n // 2, n // 2]
    assert out.visual_per_layer[0].tolist() == [n] * 4  # prefill itself was unpruned


def test_hook_layer_out_of_range(llava):
    inputs, _ = _inputs(llava, n=1)
    with pytest.raises(ValueError, match="hook layer"):
        llava.runner.prefill(inputs, [PrefillDrop(0, lambda c: c.state.segment == VISUAL)])
    with pytest.raises(ValueError, match="bias layer 0 must be"):  # layer 0 has no earlier layer to record
        llava.runner.prefill(inputs, biases=[AttentionBias(0, lambda c: None, record_inputs=(0,))])
    with pytest.raises(ValueError, match="bias layer 9 must be"):
        llava.runner.prefill(inputs, biases=[AttentionBias(9, lambda c: None)])


def test_hiding_keys_from_layer_0_equals_pre_llm_selection(llava):
    # Hidden from every other row in every layer, the left-out visual tokens are as good as never spliced in: the
    # text rows compute what pre-LLM selection at original positions computes (StepPrune's attention gate at hard g).
    prompt = llava.prepare(make_images(2, seed=4), PROMPTS[:2])
    vision = llava.vision_features(prompt)
    inputs = llava.splice(prompt, llava.keep_all(vision), vision)
    n = int(vision.num_tokens[0])
    index = torch.arange(1, n, 2)[None].expand(2, -1)  # the even-ranked visual tokens _every_other_visual keeps
    subset = VisualTokens.gather(llava.project(vision.tokens), index, torch.full((2,), index.shape[1]))
    selected = llava.forward(llava.splice(prompt, subset, vision, "original"))
    biased = llava.forward(inputs, biases=[AttentionBias(0, _hide_odd_visual_keys)])
    from_layer_1 = llava.forward(inputs, biases=[AttentionBias(1, _hide_odd_visual_keys)])
    for b in range(2):
        want = selected.hidden[b][selected.state.valid[b]][-5:]
        torch.testing.assert_close(biased.hidden[b][inputs.valid[b]][-5:], want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(from_layer_1.hidden[b][inputs.valid[b]][-5:], want, atol=1e-4)


def test_current_attention_rows_equal_eager_attention_of_the_hook_layer(tiny_llava_dir, tiny_qwen_dir):
    # PyramidDrop's score: the hook's own layer's attention on the hidden states entering it.
    for path in (tiny_llava_dir, tiny_qwen_dir):
        eager = stepprune.load_backbone(path, attn_implementation="eager")
        inputs, prompt = _inputs(eager, n=1, seed=6)
        got = {}

        def probe(ctx):
            last = torch.full((1, 1), ctx.state.hidden.shape[1] - 1)
            got["rows"] = ctx.current_attention_rows(last)
            return ctx.state.segment == VISUAL

        eager.runner.prefill(inputs, [PrefillDrop(2, probe)])
        kw = dict(input_ids=prompt.input_ids, **prompt.pixel_inputs, **prompt.extra, output_attentions=True)
        if eager.family != "llava":
            eager.model.model.rope_deltas = None
        ref = eager.model(**kw).attentions[2][:, :, -1:, :]
        torch.testing.assert_close(got["rows"], ref.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("positions", ["keep", "contiguous"])
def test_current_attention_rows_see_earlier_drops(adapter, positions):
    # After a drop at layer 1, the rows computed on the state entering layer 2 equal the rows recomputed later
    # from layer 2's recorded input (same slots, same positions), and differ from the unpruned ones.
    inputs, _ = _inputs(adapter, n=2, seed=2)
    got = {}

    def current(ctx):
        last = torch.full((2, 1), ctx.state.hidden.shape[1] - 1)
        got["current"] = ctx.current_attention_rows(last)
        got["explicit"] = ctx.current_attention_rows(last, layer=3)
        return ctx.state.segment == VISUAL

    def recorded(ctx):
        last = torch.full((2, 1), ctx.state.hidden.shape[1] - 1)
        got["recorded"] = ctx.attention_rows(2, last)
        return ctx.state.segment == VISUAL

    adapter.runner.prefill(inputs, [PrefillDrop(1, _every_other_visual, positions=positions),
                                    PrefillDrop(2, current), PrefillDrop(3, recorded, record_inputs=(2,))])
    n = int(inputs.num_visual[0])
    assert got["current"].shape[-1] == inputs.valid.shape[1] - n + n // 2
    torch.testing.assert_close(got["current"], got["recorded"], rtol=0, atol=1e-6)
    assert not torch.allclose(got["current"], got["explicit"])  # layer=3 uses that layer's projections


def _hide_odd_visual_keys(ctx):
    """A bias hiding the odd-ranked visual tokens from every *other* query row (each still sees itself)."""
    st = ctx.state
    vis = st.segment == VISUAL
    hidden_keys = vis & ~_every_other_visual(ctx)
    B, L = hidden_keys.shape
    bias = torch.zeros(B, L, L, dtype=st.hidden.dtype)
    bias = bias.masked_fill(hidden_keys[:, None, :], torch.finfo(bias.dtype).min)
    return bias.masked_fill(torch.eye(L, dtype=torch.bool)[None], 0.0)


def test_zero_attention_bias_changes_nothing(adapter):
    inputs, _ = _inputs(adapter)
    plain = adapter.forward(inputs).hidden
    zero = adapter.forward(inputs, biases=[AttentionBias(2, lambda ctx: torch.zeros(
        2, ctx.state.valid.shape[1], ctx.state.valid.shape[1]))]).hidden
    torch.testing.assert_close(zero, plain, rtol=0, atol=1e-6)


def test_hiding_keys_by_bias_equals_dropping_them_for_the_other_rows(adapter):
    # Hiding visual keys from every other row at layers >= 2 computes exactly what dropping them before layer 2
    # computes for the remaining rows (the hidden tokens' own rows are computed but never read).
    inputs, _ = _inputs(adapter, seed=4)
    dropped = adapter.forward(inputs, [PrefillDrop(2, _every_other_visual)])
    biased = adapter.forward(inputs, biases=[AttentionBias(2, _hide_odd_visual_keys)])
    plain = adapter.forward(inputs)
    for b in range(2):
        kept = dropped.state.valid[b]
        last = dropped.hidden[b][kept][-5:]  # the prompt's last text slots
        torch.testing.assert_close(biased.hidden[b][inputs.valid[b]][-5:], last, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(plain.hidden[b][inputs.valid[b]][-5:], last, atol=1e-4)


def test_a_soft_bias_is_differentiable_and_acts_per_query_row(llava):
    inputs, _ = _inputs(llava, n=1, seed=7)
    L = inputs.valid.shape[1]
    logw = torch.zeros(1, L, L, requires_grad=True)
    with torch.no_grad():
        logw[0, L - 1, inputs.segment[0] == VISUAL] = -1.0  # only the last row attends less to the image
    res = llava.forward(inputs, biases=[AttentionBias(2, lambda ctx: logw)])
    res.hidden[0, -1].sum().backward()
    grad = logw.grad[0]
    assert torch.isfinite(grad).all() and grad[L - 1].abs().sum() > 0
    plain = llava.forward(inputs).hidden
    torch.testing.assert_close(res.hidden[0, :-1].detach(), plain[0, :-1], rtol=0, atol=1e-5)  # other rows untouched
    assert not torch.allclose(res.hidden[0, -1].detach(), plain[0, -1], atol=1e-4)


def test_attention_bias_checks_its_shape_and_later_drops(llava):
    inputs, _ = _inputs(llava, n=1)
    with pytest.raises(ValueError, match="returned shape"):
        llava.forward(inputs, biases=[AttentionBias(2, lambda ctx: torch.zeros(1, 3, 3))])
    with pytest.raises(ValueError, match="cannot be combined with a PrefillDrop at a later layer"):
        llava.forward(inputs, [PrefillDrop(3, _every_other_visual)],
                      biases=[AttentionBias(2, lambda ctx: torch.zeros(1, 1, 1))])
