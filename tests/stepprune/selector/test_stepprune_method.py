"""The registered ``stepprune`` method on both tiny backbones: the two paths, gradients, batching, limits, variants."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stepprune
from stepprune.selector import StepPrune, StepPruneConfig
from stepprune.selector.gate import HARD_FLOOR, attention_gate, straight_through
from tests.conftest import make_images


def _method(adapter, seed=0, **cfg):
    torch.manual_seed(seed)
    return stepprune.build_method("stepprune", cfg).bind(adapter)


def test_registered_with_its_flags():
    cls = stepprune.method_class("stepprune")
    assert cls is StepPrune and cls.config_class is StepPruneConfig
    assert cls.hook_point == "pre_llm" and cls.uses_text and not cls.training_free and not cls.budgeted


def test_config_rejects_a_budget_and_bad_values():
    with pytest.raises(ValueError, match="takes no budget"):
        stepprune.build_method("stepprune", budget=64)
    with pytest.raises(ValueError, match="divisible"):
        StepPruneConfig(d=30, heads=4)
    with pytest.raises(ValueError, match="unknown key"):
        stepprune.build_method("stepprune", lam=0.1)
    with pytest.raises(ValueError, match="text_attention must be"):
        stepprune.build_method("stepprune", text_attention="cross")


def test_split_text_attention_reaches_the_encoder(llava, small):
    m = _method(llava, **small, text_attention="split")
    assert m.encoder.split_text and not _method(llava, **small).encoder.split_text


def test_bind_records_the_backbone_dimensions(llava, qwen, small):
    m = _method(llava, **small)
    assert (m.config.d_tok, m.config.d_llm, m.config.token_group) == (32, 32, 1)
    q = _method(qwen, **small)
    assert (q.config.d_tok, q.config.d_llm, q.config.token_group) == (128, 32, 4)
    assert isinstance(q.encoder.input_proj, torch.nn.Linear) and q.encoder.input_proj.in_features == 128
    assert q.denoiser.width == 32 and q.denoiser.group == 4  # per pre-merger patch feature
    with pytest.raises(ValueError, match="d_tok"):
        m.check_compatible(qwen)


@pytest.mark.parametrize("backbone", ["llava", "qwen"])
def test_pruned_vlm_generates_with_stepprune(backbone, request, make_batch, small):
    adapter = request.getfixturevalue(backbone)
    method = stepprune.build_method("stepprune", small)  # not bound: binds at the first forward
    vlm = stepprune.PrunedVLM(adapter, method)
    prompt = make_batch(adapter, 2, answers=False)
    out = vlm.generate(prompt, max_new_tokens=3)
    assert len(out.texts) == 2 and out.tokens.shape[0] == 2
    diag = method.last_diagnostics
    assert torch.equal(out.kept, diag["count"])
    for b in range(2):
        kept = out.kept_index[b]
        assert kept == sorted(kept) and len(set(kept)) == len(kept) == int(out.kept[b])
        assert 1 <= len(kept) <= small["k_max"]
        assert kept == diag["selection"][b, : len(kept)].tolist()
    assert bool((out.visual_per_layer[:, 0] == out.kept).all())


@pytest.mark.parametrize("backbone", ["llava", "qwen"])
def test_training_selection_equals_inference_selection(backbone, request, make_batch, make_context, small):
    adapter = request.getfixturevalue(backbone)
    m = _method(adapter, **small)
    ctx = make_context(adapter, make_batch(adapter, 3))
    m.train_forward(ctx, step=50)  # after the alpha warm-up (10 of 100 steps): the text gate is 1, as at inference
    trained = dict(m.last_diagnostics)
    m.select(ctx)
    assert torch.equal(trained["selection"], m.last_diagnostics["selection"])
    assert torch.equal(trained["count"], m.last_diagnostics["count"])


def test_only_selector_parameters_receive_gradients(llava, make_batch, make_context, small):
    m = _method(llava, **small)
    prompt = make_batch(llava, 2)
    ctx = make_context(llava, prompt)
    out = m.train_forward(ctx, step=50)
    loss = llava.lm_loss(llava.forward(llava.splice(prompt, out.visual, ctx.vision))) + out.aux_loss
    loss.backward()
    assert all(p.grad is None for p in llava.model.parameters())
    assert not any(p.requires_grad for p in llava.model.parameters())
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for prefix in ("encoder.text_proj.weight", "encoder.blocks.0.qkv.weight", "decoder.start", "decoder.stop",
                   "decoder.step_embed", "decoder.pointer_q.weight", "decoder.memory_proj.weight",
                   "decoder.layers.1.ffn.fc2.weight", "denoiser.out.weight", "denoiser.fc2.weight"):
        assert grads[prefix].abs().sum() > 0, prefix


def test_lm_loss_alone_trains_the_pointer_through_the_surrogate(llava, make_batch, make_context, small):
    """L_LM -> projector -> denoiser -> gate -> g (SoftTopK) -> s -> p_t -> decoder and encoder."""
    m = _method(llava, **small)
    prompt = make_batch(llava, 2)
    ctx = make_context(llava, prompt)
    out = m.train_forward(ctx, step=50)
    llava.lm_loss(llava.forward(llava.splice(prompt, out.visual, ctx.vision))).backward()
    for name in ("decoder.pointer_q.weight", "decoder.layers.0.cross_q.weight", "decoder.stop",
                 "encoder.blocks.0.qkv.weight", "encoder.text_proj.weight"):
        assert dict(m.named_parameters())[name].grad.abs().sum() > 0, name


def test_length_term_gradient_reaches_the_stop_vector(llava, make_batch, make_context, small):
    m = _method(llava, **small)
    ctx = make_context(llava, make_batch(llava, 2))
    out = m.train_forward(ctx, step=50)
    torch.testing.assert_close(out.aux_loss.detach(), 0.3 * out.metrics["length"])
    torch.testing.assert_close(out.metrics["length"], out.metrics["K_mean"] / 576)
    out.aux_loss.backward()
    assert m.decoder.stop.grad.abs().sum() > 0
    assert m.denoiser.out.weight.grad is None or m.denoiser.out.weight.grad.abs().sum() == 0


def test_train_forward_returns_all_tokens_and_metrics(qwen, make_batch, make_context, small):
    m = _method(qwen, **small)
    ctx = make_context(qwen, make_batch(qwen, 2))
    out = m.train_forward(ctx, step=0)
    assert out.visual.embeds.shape == (2, 144, 32)
    assert torch.equal(out.visual.source_index[0], torch.arange(144)) and out.visual.count.tolist() == [144, 144]
    for key in ("K_mean", "K_std", "kbar", "K_minus_Khat", "p1_stop", "pointer_entropy", "overlap", "alpha",
                "beta", "lambda", "frac_capped", "g_std", "g_selected", "g_rest", "log_prob", "text_effect",
                "question_effect"):
        assert key in out.metrics and torch.isfinite(torch.as_tensor(out.metrics[key])).all(), key
    assert float(out.metrics["alpha"]) == 0.0 and float(out.metrics["beta"]) == pytest.approx(0.2)
    assert float(out.metrics["text_effect"]) == 0.0  # alpha = 0 at step 0: the question's content cannot enter yet
    assert 0.0 <= float(out.metrics["overlap"]) <= 1.0
    # k_bar moved from K_max towards the batch mean
    expected = 0.9 * small["k_max"] + 0.1 * float(out.metrics["K_mean"])
    assert float(m.kbar.value) == pytest.approx(expected)


@pytest.mark.parametrize("tau, selected_first", [(100.0, False), (1e-3, True)])
def test_eq11_gates_the_selection_only_when_the_pointer_is_sharp(tau, selected_first, llava, make_batch,
                                                                 make_context, small):
    # A flat pointer (p_t ~ 1 / (N + 1 - t)) credits a token picked at step t with about t / N and an unpicked one
    # with about T / N, so the training gate opens the tokens inference drops; a sharp one gives each pick ~gamma^t.
    m = _method(llava, **{**small, "tau": tau, "k_min": small["k_max"]})  # every episode runs to the cap
    out = m.train_forward(make_context(llava, make_batch(llava, 2)), step=0)
    selected, rest = float(out.metrics["g_selected"]), float(out.metrics["g_rest"])
    assert 0.0 < selected < 1.0 and 0.0 < rest < 1.0
    assert (selected > rest) == selected_first, (selected, rest)
    if selected_first:
        assert float(out.metrics["overlap"]) >= 0.9  # top-K(g) is (nearly) S


def test_text_and_question_effects_measure_how_far_the_question_moves_the_memory(llava, make_batch, make_context,
                                                                                 small):
    m = _method(llava, **small)
    ctx = make_context(llava, make_batch(llava, 2))
    before = m.train_forward(ctx, step=50).metrics  # alpha = 1 by then
    assert float(before["text_effect"]) > 0 and float(before["question_effect"]) > 0
    with torch.no_grad():  # a stronger text projection moves the memory further
        m.encoder.text_proj.weight.mul_(50)
    after = m.train_forward(ctx, step=50).metrics
    for key in ("text_effect", "question_effect"):
        assert float(after[key]) > float(before[key]), key
    same = llava.prepare(make_images(2, seed=5), ["What color is the square?"] * 2, ["red", "red"])
    same_q = m.train_forward(make_context(llava, same), step=50).metrics  # swapping in the same question
    assert float(same_q["text_effect"]) > 0 and float(same_q["question_effect"]) == 0.0
    single = m.train_forward(make_context(llava, make_batch(llava, 1)), step=50).metrics
    assert "text_effect" in single and "question_effect" not in single  # no other question to swap in


def test_training_without_total_steps_fails_clearly(llava, make_batch, make_context, small):
    small.pop("total_steps")
    m = _method(llava, **small)
    with pytest.raises(ValueError, match="total_steps"):
        m.train_forward(make_context(llava, make_batch(llava, 1)), step=0)


def _one_by_one(method, adapter, make_batch, make_context, n, **kw):
    method.select(make_context(adapter, make_batch(adapter, n, **kw)))
    together = method.last_diagnostics
    for b in range(n):
        method.select(make_context(adapter, make_batch(adapter, n, pick=[b], **kw)))
        k = int(together["count"][b])
        assert int(method.last_diagnostics["count"][0]) == k
        assert torch.equal(method.last_diagnostics["selection"][0], together["selection"][b])
    return together


def test_a_batch_equals_its_samples_one_by_one(llava, make_batch, make_context, small):
    m = _method(llava, **small)
    m.config.k_min = 2
    with torch.no_grad():  # make episodes stop at different lengths: a strong stop logit
        m.decoder.stop.mul_(0.0).add_(torch.randn(32) * 3.0)
    _one_by_one(m, llava, make_batch, make_context, 4, seed=3)  # questions of different lengths; K = 5, 10, 2, 3


def test_qwen_batch_with_different_image_sizes_equals_one_by_one(qwen, make_batch, make_context, small):
    m = _method(qwen, **small)
    sizes = [(96, 96), (64, 64), (96, 64)]
    ctx = make_context(qwen, make_batch(qwen, 3, sizes=sizes))
    assert ctx.vision.num_tokens.tolist() == [144, 64, 96]  # padded to 144 in the batch
    vis = m.select(ctx)
    for b in range(3):
        k = int(vis.count[b])
        assert int(vis.source_index[b, :k].max()) < int(ctx.vision.num_tokens[b])  # never a padding slot
    _one_by_one(m, qwen, make_batch, make_context, 3, sizes=sizes)


def test_limits_hold_on_a_backbone(llava, qwen, make_batch, make_context, small):
    small.update(k_min=3, k_max=5)
    m = _method(llava, **small)
    m.select(make_context(llava, make_batch(llava, 3)))
    assert bool(((m.last_diagnostics["count"] >= 3) & (m.last_diagnostics["count"] <= 5)).all())
    small.update(k_max=100, k_max_ratio=0.1)
    q = _method(qwen, **small)
    ctx = make_context(qwen, make_batch(qwen, 2, sizes=[(96, 96), (64, 64)]))
    q.select(ctx)
    assert bool((q.last_diagnostics["count"] <= torch.tensor([15, 7])).all())


@pytest.mark.parametrize("variant", [
    {"pointer": "cross_attention"}, {"causal_encoder": True}, {"score_mode": "last_step"},
    {"score_mode": "uniform"}, {"score_mode": "alive"}, {"soft_topk_solver": "sinkhorn"}, {"per_sample_k": True},
    {"noise_scale": "token"}, {"denoise_at_inference": True}, {"denoiser": False}, {"type_embedding": True},
    {"gate_forward": "hard"}, {"gate": "attention"}, {"budget_grad": True},
    {"budget_grad": True, "per_sample_k": True},
    {"mask_glimpse": False, "logit_clip": 10.0, "step_embedding": False},
])
def test_ablation_switches_run_both_paths(variant, llava, make_batch, make_context, small):
    small.update(k_max=8, **variant)
    m = _method(llava, **small)
    prompt = make_batch(llava, 2)
    ctx = make_context(llava, prompt)
    out = m.train_forward(ctx, step=50)
    loss = llava.lm_loss(llava.forward(llava.splice(prompt, out.visual, ctx.vision), biases=out.biases))
    (loss + out.aux_loss).backward()
    assert torch.isfinite(loss)
    vis = m.select(ctx)
    assert vis.embeds.shape[0] == 2 and bool((vis.count >= 1).all())


def test_the_hard_gate_shows_the_llm_exactly_the_inference_selection_and_trains_through_softtopk(
        llava, make_batch, make_context, small):
    small.update(k_max=8, gate_forward="hard", denoiser=False)
    m = _method(llava, **small)
    prompt = make_batch(llava, 2)
    ctx = make_context(llava, prompt)
    out = m.train_forward(ctx, step=50)
    clean = llava.project(ctx.vision.tokens)
    for b in range(2):
        chosen = m.last_diagnostics["selection"][b, : int(m.last_diagnostics["count"][b])]
        rest = torch.ones(clean.shape[1], dtype=torch.bool)
        rest[chosen] = False
        assert torch.allclose(out.visual.embeds[b, chosen], clean[b, chosen], atol=1e-5)  # kept: the raw tokens
        assert not torch.allclose(out.visual.embeds[b, rest], clean[b, rest], atol=1e-3)  # the rest: pure noise
    # The same selection as inference (deterministic argmax, fixed weights).
    with torch.no_grad():
        vis = m.select(ctx)
    for b in range(2):
        k = int(vis.count[b])
        assert vis.source_index[b, :k].tolist() == m.last_diagnostics["selection"][b, :k].tolist()
    llava.lm_loss(llava.forward(llava.splice(prompt, out.visual, ctx.vision))).backward()
    grads = [p.grad for p in m.decoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)  # the pointer learns through the SoftTopK


def test_the_attention_gate_at_a_hard_g_is_the_inference_forward_and_trains_the_pointer(
        llava, make_batch, make_context, small):
    small.update(k_max=8, gate="attention")
    m = _method(llava, **small)
    assert m.denoiser is None  # nothing to denoise: the LLM sees the raw tokens
    prompt = make_batch(llava, 2)
    vlm = stepprune.PrunedVLM(llava, m)
    inputs, out = vlm.train_inputs(prompt, step=50)
    assert len(out.biases) == 1 and out.biases[0].layer == 0
    torch.testing.assert_close(out.visual.embeds, llava.project(vlm.context(prompt).vision.tokens))

    def nll(inputs, biases=()):
        return llava.lm_loss(llava.forward(inputs, biases=biases), per_sample=True)

    # g = 1 everywhere hides nothing: exactly the unpruned model (parity).
    ones = torch.ones(2, out.visual.embeds.shape[1])
    vanilla = nll(llava.splice(prompt, llava.keep_all(vlm.context(prompt).vision), vlm.context(prompt).vision))
    torch.testing.assert_close(nll(inputs, [attention_gate(ones)]).detach(), vanilla, atol=1e-5, rtol=0)
    # g = 1[i in S]: the inference forward (only S, original positions), up to the 1e-6 floor on the rest.
    with torch.no_grad():
        diag = m.last_diagnostics  # the training selection (equal to inference's, tested above)
        hard = torch.zeros_like(ones)
        for b in range(2):
            hard[b, diag["selection"][b, : int(diag["count"][b])]] = 1.0
        selected, _ = vlm.llm_inputs(vlm.context(prompt))
        gated = nll(inputs, [attention_gate(hard.float())])
        inference = nll(selected)
        unmasked = nll(inputs)
    torch.testing.assert_close(gated, inference, atol=2e-4, rtol=0)
    assert float((unmasked - inference).abs().max()) > 1e-2  # the bias is what hides the rest
    # The soft gate's gradient reaches the pointer through the SoftTopK.
    (nll(inputs, out.biases).mean() + out.aux_loss).backward()
    grads = [p.grad for p in m.decoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert m.encoder.text_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("per_sample_k", [False, True])
def test_budget_grad_keeps_the_values_and_lets_the_lm_loss_reach_the_count(per_sample_k, llava, make_batch,
                                                                           make_context, small):
    small.update(k_max=8, per_sample_k=per_sample_k)
    prompt = make_batch(llava, 2)
    grads, visuals = {}, {}
    for flag in (False, True):
        m = _method(llava, **small, budget_grad=flag)
        torch.manual_seed(1)  # the same noise draw in both
        out = m.train_forward(make_context(llava, prompt), step=50)
        visuals[flag] = out.visual.embeds.detach()
        lm = llava.lm_loss(llava.forward(llava.splice(prompt, out.visual, make_context(llava, prompt).vision)))
        grads[flag] = torch.autograd.grad(lm, m.decoder.stop)[0]
    torch.testing.assert_close(visuals[True], visuals[False], rtol=0, atol=0)  # a straight-through: same forward
    assert float((grads[True] - grads[False]).abs().max()) > 1e-6 * float(grads[False].abs().max() + 1e-12)


def test_the_hard_attention_gate_trains_on_the_inference_forward(llava, make_batch, make_context, small):
    small.update(k_max=8, gate="attention", gate_forward="hard")
    m = _method(llava, **small)
    prompt = make_batch(llava, 2)
    vlm = stepprune.PrunedVLM(llava, m)
    inputs, out = vlm.train_inputs(prompt, step=50)
    train = llava.lm_loss(llava.forward(inputs, biases=out.biases), per_sample=True)
    with torch.no_grad():
        selected, _ = vlm.llm_inputs(vlm.context(prompt))
        inference = llava.lm_loss(llava.forward(selected), per_sample=True)
    torch.testing.assert_close(train.detach(), inference, atol=2e-4, rtol=0)  # no leak from the left-out tokens
    (train.mean() + out.aux_loss).backward()
    grads = [p.grad for p in m.decoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_the_hard_attention_gate_hides_left_out_keys_with_high_logits(llava, make_batch, small):
    small.update(k_max=8, gate="attention", gate_forward="hard")
    m = _method(llava, **small)
    prompt = make_batch(llava, 2)
    vlm = stepprune.PrunedVLM(llava, m)
    with torch.no_grad():
        inputs, out = vlm.train_inputs(prompt, step=50)
        diag = m.last_diagnostics
        loud = torch.full((2, out.visual.embeds.shape[1]), math.exp(30.0))
        for b in range(2):
            loud[b, diag["selection"][b, : int(diag["count"][b])]] = 1.0
        # A trained LLM's attention logits to some visual keys can lie far above others' (on the committed backbone
        # the 1e-6 floor let left-out keys through); here every left-out key gets +30 (biases at one layer add up).
        train = llava.lm_loss(llava.forward(inputs, biases=[*out.biases, attention_gate(loud)]), per_sample=True)
        selected, _ = vlm.llm_inputs(vlm.context(prompt))
        inference = llava.lm_loss(llava.forward(selected), per_sample=True)
        torch.testing.assert_close(train, inference, atol=2e-4, rtol=0)
        soft_floor = [attention_gate((loud == 1.0).float()), attention_gate(loud)]
        leaky = llava.lm_loss(llava.forward(inputs, biases=soft_floor), per_sample=True)
    assert float((leaky - inference).abs().max()) > 1e-2  # at the soft gate's 1e-6 floor they get through


def test_straight_through_attention_gate_gives_left_out_tokens_their_first_order_effect(llava, make_batch):
    prompt = make_batch(llava, 1)
    vision = llava.vision_features(prompt)
    inputs = llava.splice(prompt, llava.keep_all(vision), vision)
    n = vision.tokens.shape[1]
    hard = torch.zeros(1, n)
    hard[0, :: n // 8] = 1.0  # 8 kept tokens

    def nll(gate):
        return llava.lm_loss(llava.forward(inputs, biases=[attention_gate(gate, HARD_FLOOR)]))

    g = torch.full((1, n), 0.3, requires_grad=True)
    loss = nll(straight_through(hard, g))
    torch.testing.assert_close(loss.detach(), nll(hard).detach())  # the forward is the hard selection's
    (grad,) = torch.autograd.grad(loss, g)
    left_out = (hard[0] == 0).nonzero().flatten()[:4]
    eps = 1e-2  # fp32 losses: a smaller step drowns the difference in rounding
    with torch.no_grad():
        for j in left_out.tolist():
            bumped = hard.clone()
            bumped[0, j] = eps
            finite = (nll(bumped) - nll(hard)) / eps
            assert float(grad[0, j]) == pytest.approx(float(finite), rel=0.1, abs=2e-4), j
    assert float(grad[0, left_out].abs().sum()) > 0


def test_gate_names_are_checked():
    with pytest.raises(ValueError, match="gate must be"):
        StepPruneConfig(gate="mask")


def test_the_library_does_not_import_the_pipeline_stack():
    code = "import sys, stepprune; bad = [m for m in ('ray', 'deepspeed', 'mlflow') if m in sys.modules]; print(bad)"
    root = Path(stepprune.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
