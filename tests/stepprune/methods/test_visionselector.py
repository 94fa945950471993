"""VisionSelector: the scorer, the soft top-K training path, the BCE curriculum, hard top-K inference, checkpoints."""

import math

import pytest
import torch

import stepprune
from stepprune.checkpoint import load_checkpoint, save_checkpoint
from stepprune.methods.visionselector import ImportanceScorer, VisionSelector, VisionSelectorConfig
from tests.conftest import PROMPTS, make_images
from tests.stepprune.methods.inllm_reference import context

pytestmark = pytest.mark.usefixtures("one_thread")


def _method(adapter, seed=0, scale=None, **cfg):
    """A bound VisionSelector; ``scale`` re-draws the scorer weights with a larger std so that scores differ."""
    torch.manual_seed(seed)
    m = stepprune.build_method("visionselector", {"total_steps": 20, **cfg}).bind(adapter)
    if scale is not None:
        with torch.no_grad():
            for p in m.scorer.parameters():
                p.normal_(std=scale)
    return m


def _train_batch(adapter, n=2, sizes=None, pick=None):
    sizes = sizes or [(96, 96)] * n
    imgs = [make_images(1, seed=i, size=s)[0] for i, s in enumerate(sizes)]
    answers = ["red", "three", "yes"]
    idx = list(range(n)) if pick is None else pick
    prompt = adapter.prepare([imgs[i] for i in idx], [PROMPTS[i % 3] for i in idx], [answers[i % 3] for i in idx])
    return stepprune.SelectionContext(adapter, prompt, adapter.vision_features(prompt))


def test_registered_with_its_flags_and_config_checks():
    cls = stepprune.method_class("visionselector")
    assert cls is VisionSelector and cls.config_class is VisionSelectorConfig
    assert cls.hook_point == "pre_llm" and not cls.uses_text and not cls.training_free and cls.budgeted
    with pytest.raises(ValueError, match="exactly one"):
        VisionSelectorConfig(train_budget=64)
    assert VisionSelectorConfig(train_ratio=None, train_budget=64).train_count(576) == 64
    with pytest.raises(ValueError, match="train_ratio must be in"):
        VisionSelectorConfig(train_ratio=1.5)
    with pytest.raises(ValueError, match="not both"):
        VisionSelectorConfig(budget=8, ratio=0.1)


def test_scorer_is_q_dot_mean_k_with_the_card_init():
    torch.manual_seed(0)
    scorer = ImportanceScorer(8)
    assert scorer.q_proj.weight.shape == (4, 8) and float(scorer.q_proj.bias.detach().abs().sum()) == 0.0
    assert 0.5e-4 < float(scorer.k_proj.weight.detach().std()) < 2e-4
    with torch.no_grad():
        for p in scorer.parameters():
            p.normal_()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    s = scorer(x, mask)
    q, k = scorer.q_proj(x), scorer.k_proj(x)
    full = (q[0] @ k[0].T / 2.0).mean(dim=1)  # (1/N) sum_j q_i . k_j / sqrt(D/2)
    torch.testing.assert_close(s[0], full)
    torch.testing.assert_close(s[1, :3], (q[1, :3] @ k[1, :3].T / 2.0).mean(dim=1))  # padding never counts
    assert bool((s[1, 3:] == 0).all())


def test_gradients_reach_only_the_scorer(adapter):
    m = _method(adapter)
    ctx = _train_batch(adapter)
    out = stepprune.PrunedVLM(adapter, m).forward(ctx.prompt, step=5)
    out.loss.backward()
    assert all(p.grad is None for p in adapter.model.parameters())
    assert {n for n, _ in m.named_parameters()} == {"scorer.q_proj.weight", "scorer.q_proj.bias",
                                                    "scorer.k_proj.weight", "scorer.k_proj.bias"}
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


def test_soft_mask_sums_to_k_and_multiplies_every_token(qwen):
    m = _method(qwen, scale=0.5)
    ctx = _train_batch(qwen, n=3, sizes=[(96, 96), (64, 64), (96, 64)])
    n = ctx.vision.num_tokens
    assert n.tolist() == [144, 64, 96]
    out = m.train_forward(ctx, step=0)
    mask = m.last_diagnostics["mask"]
    k = torch.tensor([int(0.2 * v) for v in n.tolist()], dtype=torch.float32)
    torch.testing.assert_close(mask.sum(dim=1), k, rtol=0, atol=1e-3)
    assert bool((mask[1, 64:] == 0).all()) and bool(((mask > 0) & (mask < 1))[0].all())
    # nothing is removed: every token at its original index, scaled by its mask value
    assert out.visual.count.tolist() == n.tolist() and torch.equal(out.visual.source_index[0], torch.arange(144))
    torch.testing.assert_close(out.visual.embeds, ctx.projected() * mask[..., None])
    # the BCE target is the hard top-K of the same scores
    hard = m.last_diagnostics["keep"]
    assert hard.sum(dim=1).tolist() == k.long().tolist()
    s = m.last_diagnostics["scores"][0]
    assert float(s[hard[0]].min()) >= float(s[~hard[0]].max())


def test_bce_weight_follows_the_linear_curriculum(llava):
    m = _method(llava, total_steps=100)
    assert [m.reg_weight(s) for s in (0, 50, 100, 150)] == pytest.approx([0.1, 1.05, 2.0, 2.0])
    ctx = _train_batch(llava)
    for step in (0, 30, 100):
        out = m.train_forward(ctx, step)
        lam = 0.1 + 1.9 * step / 100
        assert float(out.metrics["lambda"]) == pytest.approx(lam)
        torch.testing.assert_close(out.aux_loss.detach(), lam * out.metrics["bce"])
    # a fresh, unsharpened mask (scores ~0, m ~ K/N everywhere) has the BCE of a K/N coin
    r = 115 / 576
    assert float(out.metrics["bce"]) == pytest.approx(-(r * math.log(r) + (1 - r) * math.log(1 - r)), rel=1e-3)
    m.config.total_steps = None
    with pytest.raises(ValueError, match="total_steps"):
        m.train_forward(ctx, 0)


def test_bce_is_the_clamped_formula_with_finite_gradients_where_the_mask_saturates():
    from stepprune.methods.visionselector import bce

    m = torch.tensor([[0.0, 1e-30, 0.3, 0.9, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 1.0]])
    mask = torch.ones_like(target, dtype=torch.bool)
    loss = bce(m, target, mask)
    # -log clamped at -100 (m = 0 for a kept target, m = 1 for a dropped one), -log(1e-30), the interior terms, 0
    want = (100 + 30 * math.log(10) - math.log(0.3) - math.log(0.1) + 100 + 0) / 6
    assert float(loss) == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert torch.isfinite(m.grad).all()  # log(m).clamp_min(-100) sent 0 * inf = NaN back from the saturated entries
    assert m.grad[0, 0] == 0 and m.grad[0, 4] == 0  # saturated the wrong way: the constant -100, no gradient
    torch.testing.assert_close(m.grad[0, 2:], torch.tensor([-1 / 0.3, 1 / 0.1, 0.0, -1.0]) / 6)


def test_training_with_spread_scores_keeps_every_gradient_finite(llava):
    # scores spread by tens of units saturate the soft mask to exact 0s and 1s in fp32 (the embedded run's step 3)
    m = _method(llava, scale=20)
    ctx = _train_batch(llava)
    out = m.train_forward(ctx, 19)
    mask = m.last_diagnostics["mask"]
    assert bool(((mask == 0) | (mask == 1)).any())
    out.aux_loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.scorer.parameters())


def test_inference_budgets_on_both_backbones_keep_original_positions(adapter):
    m = _method(adapter, scale=0.5, **({"budget": 64} if adapter.family == "llava" else {"ratio": 0.25}))
    ctx = context(adapter, n=2, seed=3)
    vlm = stepprune.PrunedVLM(adapter, m)
    inputs, visual = vlm.llm_inputs(ctx)
    n = int(ctx.vision.num_tokens[0])
    k = 64 if adapter.family == "llava" else int(0.25 * n)
    assert visual.count.tolist() == [k, k]
    with torch.no_grad():
        s = m.scores(ctx)
    for b in range(2):
        kept = visual.source_index[b, :k]
        assert bool((kept.diff() > 0).all())  # sorted: spatial order
        rest = torch.ones(n, dtype=torch.bool)
        rest[kept] = False
        assert float(s[b, kept].min()) >= float(s[b, :n][rest].max())  # the hard top-K
        # original position ids (LLaVA: 1-D, gaps; Qwen: the original 3-D M-RoPE ids)
        prompt = ctx.prompt
        real = prompt.attention_mask[b].bool()
        ids = prompt.input_ids[b][real]
        start = int((ids == adapter.image_token_id).nonzero()[0])
        orig = prompt.positions[..., b, :][..., real] if prompt.positions.dim() == 3 else prompt.positions[b][real]
        vis = inputs.segment[b] == 2
        got = inputs.positions[..., b, :][..., vis] if inputs.positions.dim() == 3 else inputs.positions[b][vis]
        assert torch.equal(got, orig[..., start + kept])
    out = vlm.generate(ctx.prompt, max_new_tokens=2)
    assert out.visual_per_layer.tolist() == [[k] * adapter.num_layers] * 2


def test_without_a_budget_it_keeps_the_training_budget(llava):
    m = _method(llava, scale=0.5)
    assert int(m.select(context(llava)).count[0]) == int(0.2 * 576)
    m.config.train_ratio, m.config.train_budget = None, 40
    assert int(m.select(context(llava)).count[0]) == 40


def test_a_batch_equals_its_samples_one_by_one(qwen):
    m = _method(qwen, scale=0.5, ratio=0.3)
    sizes = [(96, 96), (64, 64), (96, 64)]
    together = _train_batch(qwen, 3, sizes)
    vis = m.select(together)
    scores = m.last_diagnostics["scores"]
    m.train_forward(together, 3)
    mask = m.last_diagnostics["mask"]
    for b in range(3):
        alone = _train_batch(qwen, 3, sizes, pick=[b])
        one = m.select(alone)
        n = int(alone.vision.num_tokens[0])
        k = int(one.count[0])
        assert k == int(vis.count[b]) == int(0.3 * n)
        assert torch.equal(one.source_index[0, :k], vis.source_index[b, :k])
        torch.testing.assert_close(m.last_diagnostics["scores"][0, :n], scores[b, :n], rtol=1e-5, atol=1e-7)
        m.train_forward(alone, 3)
        torch.testing.assert_close(m.last_diagnostics["mask"][0, :n], mask[b, :n], rtol=1e-4, atol=1e-6)


def test_checkpoint_round_trip_gives_identical_selections(llava, tmp_path):
    m = _method(llava, budget=32)
    vlm = stepprune.PrunedVLM(llava, m)
    ctx = _train_batch(llava, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=0.05)
    for step in range(3):
        vlm.forward(ctx.prompt, step).loss.backward()
        opt.step()
        opt.zero_grad()
    before = m.select(ctx)
    folder = save_checkpoint(m, tmp_path / "vs", adapter=llava, step=3)
    loaded = load_checkpoint(folder, llava)
    assert isinstance(loaded, VisionSelector) and loaded.config == m.config and loaded.config.d_llm == 32
    after = loaded.select(ctx)
    assert torch.equal(after.source_index, before.source_index) and torch.equal(after.count, before.count)
    assert torch.equal(after.embeds, before.embeds)
    loaded.config.d_llm = 48
    with pytest.raises(ValueError, match=r"d_llm \(LLM embedding width\): selector has 48, backbone has 32"):
        loaded.check_compatible(llava)
    with pytest.raises(ValueError, match="nothing to save"):
        save_checkpoint(stepprune.build_method("visionselector"), tmp_path / "unbound")


def test_a_short_training_run_lowers_the_loss(llava):
    m = _method(llava, total_steps=30)
    vlm = stepprune.PrunedVLM(llava, m)
    ctx = _train_batch(llava, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.0)
    with torch.no_grad():
        first = vlm.forward(ctx.prompt, step=0)
    for step in range(30):
        vlm.forward(ctx.prompt, step).loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        last = vlm.forward(ctx.prompt, step=0)  # the same lambda as the first measurement
    assert float(last.loss) < float(first.loss) - 0.03, (float(first.loss), float(last.loss))
    assert float(last.lm_loss) < float(first.lm_loss)
    assert float(last.metrics["topk_mass"]) > float(first.metrics["topk_mass"]) + 0.2  # the mask polarised
