"""DyRate-style (reimplemented): decode-time eviction at a predicted, monotone rate, and its teacher-forced training
pass, which must see exactly what cached decoding sees."""

import math

import pytest
import torch

import stepprune
from stepprune.methods.dyrate import DyRate, DyRateConfig, attention_features, target_counts
from tests.conftest import PROMPTS, make_images

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWERS = ["The image shows a large red star and a small blue circle on the left",
           "yes there is a red circle in the middle of the image"]
RATES = [1.0, 0.75, 0.5, 0.25, 0.1]


def _method(seed=0, random_predictor=False, **cfg):
    torch.manual_seed(seed)
    m = stepprune.build_method("dyrate", {"total_steps": 10, **cfg})
    if random_predictor:  # varied choices: the zero-initialised output layer would always pick rate 1
        with torch.no_grad():
            for p in m.predictor.parameters():
                p.normal_(std=2.0)
    return m


def _ctx(adapter, answers=None, n=2, seed=0):
    prompt = adapter.prepare(make_images(n, seed=seed), PROMPTS[:n], answers[:n] if answers else None)
    return stepprune.SelectionContext(adapter, prompt, adapter.vision_features(prompt))


def test_registered_with_its_flags_and_config_checks():
    cls = stepprune.method_class("dyrate")
    assert cls is DyRate and cls.config_class is DyRateConfig
    assert cls.hook_point == "decode" and cls.uses_text and not cls.training_free and not cls.budgeted
    with pytest.raises(ValueError, match="takes no budget"):
        DyRateConfig(budget=64)
    with pytest.raises(ValueError, match="strictly decreasing"):
        DyRateConfig(rates=[0.5, 1.0])
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        DyRateConfig(k=0)


def test_features_and_target_counts():
    rows = torch.tensor([[[0.1, 0.2, 0.2, 0.5], [0.4, 0.3, 0.3, 0.0]]])  # (1, 2 rows, 4 slots)
    visual = torch.tensor([[False, True, True, False]])
    f = attention_features(rows, visual, torch.tensor([[0, 96]]), horizon=64)
    torch.testing.assert_close(f[0, :, 0], torch.tensor([0.4, 0.6]))  # visual mass
    torch.testing.assert_close(f[0, :, 1], torch.tensor([1.0, 1.0]))  # uniform over 2 visual tokens: max entropy
    torch.testing.assert_close(f[0, :, 2], torch.tensor([0.0, 1.0]))  # step fraction, clipped at the horizon
    assert target_counts(torch.tensor([576, 10]), RATES).tolist() == [[576, 432, 288, 144, 58], [10, 8, 5, 3, 1]]


def test_eviction_shrinks_the_cache_monotonically(adapter):
    ctx = _ctx(adapter)
    n = int(ctx.vision.num_tokens[0])
    m = _method(schedule=[0.5, 1.0, 0.25, 0.75, 0.1])  # not monotone: the kept count still never rises
    out = stepprune.PrunedVLM(adapter, m).generate(ctx.prompt, max_new_tokens=7)
    c = [math.ceil(n * r - 1e-9) for r in (0.5, 0.25, 0.1)]
    kept = m.last_diagnostics["kept_per_step"]
    steps = kept.shape[1]
    assert kept[0].tolist() == [c[0], c[0], c[1], c[1], c[2], c[2]][:steps]
    assert out.visual_per_layer[0].tolist() == [n] * adapter.num_layers  # prefill is unpruned
    last = kept[0, -1].item()
    assert out.cached_visual_per_layer[0].tolist() == [n, n] + [last] * (adapter.num_layers - 2)
    assert len(out.final_index[0]) == last

    m = _method(random_predictor=True)
    stepprune.PrunedVLM(adapter, m).generate(ctx.prompt, max_new_tokens=8)
    kept = m.last_diagnostics["kept_per_step"]
    assert bool((kept.diff(dim=1) <= 0).all()) and bool((kept <= n).all())


def test_keep_all_reproduces_vanilla(adapter):
    ctx = _ctx(adapter, n=2, seed=5)
    vanilla = stepprune.PrunedVLM(adapter, stepprune.build_method("vanilla")).generate(ctx.prompt, 6)
    n = int(ctx.vision.num_tokens[0])
    for m in (_method(schedule=[1.0]), _method()):  # a fixed rate of 1, and an untrained predictor
        out = stepprune.PrunedVLM(adapter, m).generate(ctx.prompt, 6)
        assert torch.equal(out.tokens, vanilla.tokens)
        assert out.cached_visual_per_layer[0].tolist() == [n] * adapter.num_layers
    # the teacher-forced pass with rate 1 is the plain forward pass
    tf = _ctx(adapter, ANSWERS, seed=5)
    inputs = adapter.splice(tf.prompt, adapter.keep_all(tf.vision), tf.vision)
    hook, _ = _method(schedule=[1.0]).teacher_forcing(tf, hard=True)
    torch.testing.assert_close(adapter.forward(inputs, biases=[hook]).hidden, adapter.forward(inputs).hidden,
                               rtol=0, atol=1e-5)


def _cached_answer_logits(adapter, method, ctx_prompt, answer_ids: list[list[int]]) -> torch.Tensor:
    """(B, T, V) logits of cached decoding with eviction, teacher-forcing the given answer tokens step by step."""
    runner = adapter.runner
    inputs = adapter.splice(ctx_prompt.prompt, adapter.keep_all(ctx_prompt.vision), ctx_prompt.vision)
    evicts = method.decode_hooks(ctx_prompt)
    res = runner.prefill(inputs, evicts=evicts, use_cache=True)
    out = [runner.logits(res.hidden[:, -1])]
    T = max(len(a) for a in answer_ids)
    for s in range(T - 1):
        tok = torch.tensor([a[s] if s < len(a) else adapter.pad_token_id for a in answer_ids])
        out.append(runner.decode_step(adapter.embed_text(tok[:, None]), s, res, evicts))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("choice", ["schedule", "predictor"])
def test_teacher_forced_masks_match_cached_decoding(adapter, choice):
    cfg = {"schedule": [1.0, 0.75, 0.5, 0.5, 0.25, 0.1]} if choice == "schedule" else {}
    m = _method(random_predictor=choice == "predictor", **cfg)
    with torch.no_grad():
        tf = _ctx(adapter, ANSWERS, seed=2)
        inputs = adapter.splice(tf.prompt, adapter.keep_all(tf.vision), tf.vision)
        hook, info = m.teacher_forcing(tf, hard=True)
        res = adapter.forward(inputs, biases=[hook])
        tf_logits = adapter.runner.logits(res.hidden)
        labels = inputs.labels
        answers = [tf.prompt.input_ids[b][tf.prompt.labels[b] != -100].tolist() for b in range(2)]
        cached = _cached_answer_logits(adapter, m, _ctx(adapter, None, seed=2), answers)
    decode_kept = m.last_diagnostics["kept_per_step"]
    for b in range(2):
        first = int((labels[b] != -100).nonzero()[0])
        T = len(answers[b])
        assert T >= 8
        torch.testing.assert_close(tf_logits[b, first - 1: first - 1 + T], cached[b, :T], rtol=1e-4, atol=1e-4)
        # the teacher-forced pass evicted exactly as decoding did, step by step
        assert info["kept"][b, : T - 1].tolist() == decode_kept[b, : T - 1].tolist()
    if choice == "schedule":
        n = int(tf.vision.num_tokens[0])
        assert decode_kept[0, :6].tolist() == [math.ceil(n * r - 1e-9) for r in cfg["schedule"]]
    # without the masks the answer logits differ: the test can fail
    plain = adapter.runner.logits(adapter.forward(inputs).hidden)
    first = int((labels[0] != -100).nonzero()[0])
    assert not torch.allclose(plain[0, first + 3], tf_logits[0, first + 3], atol=1e-4)


def test_soft_masks_become_the_hard_eviction_as_the_temperature_falls():
    g = torch.Generator().manual_seed(0)
    # distinct log-scores (gaps of 0.5), so the hard top-k has no near-ties
    scores = torch.stack([torch.randperm(40, generator=g) for _ in range(10)]).view(2, 5, 40).float().mul(-0.5).exp()
    vok = torch.ones(2, 40, dtype=torch.bool)
    vok[1, 30:] = False
    k = torch.tensor([[40.0, 30.0, 30.0, 12.0, 5.0], [30.0, 20.0, 9.0, 9.0, 2.0]])
    hard = DyRate._hard_masks(scores, vok, k)
    soft = DyRate._soft_masks(scores, vok, k, tau=1e-3)
    torch.testing.assert_close(soft, hard.float(), rtol=0, atol=1e-4)
    warm = DyRate._soft_masks(scores, vok, k, tau=1.0)
    torch.testing.assert_close(warm.sum(dim=-1), k, rtol=0, atol=1e-3)  # each step keeps k_t in total
    assert bool((warm.diff(dim=1) <= 1e-6).all())  # nested: a token's weight never grows


@pytest.mark.parametrize("beta", [0.0, 0.2])
def test_the_predictor_gets_gradients_and_nothing_else(llava, beta):
    m = _method(random_predictor=True, beta=beta)
    ctx = _ctx(llava, ANSWERS)
    out = stepprune.PrunedVLM(llava, m).forward(ctx.prompt, step=3)
    assert out.metrics["kept_frac"] < 1.0 and float(out.aux_loss) == pytest.approx(beta * float(
        out.metrics["kept_frac"]))
    out.loss.backward()
    assert all(p.grad is None for p in llava.model.parameters())
    for name, p in m.named_parameters():  # with beta = 0 the gradient comes from the LM loss alone
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_training_needs_total_steps_and_a_predictor(llava):
    ctx = _ctx(llava, ANSWERS)
    with pytest.raises(ValueError, match="total_steps"):
        stepprune.build_method("dyrate").train_forward(ctx, 0)
    with pytest.raises(ValueError, match="nothing to train"):
        _method(schedule=[0.5]).train_forward(ctx, 0)
    assert _method().mask_tau(10) == pytest.approx(0.1) and _method().mask_tau(0) == pytest.approx(1.0)


def test_checkpoint_round_trip(llava, tmp_path):
    from stepprune.checkpoint import load_checkpoint, save_checkpoint

    m = _method(random_predictor=True)
    ctx = _ctx(llava)
    before = stepprune.PrunedVLM(llava, m).generate(ctx.prompt, 5)
    kept = m.last_diagnostics["kept_per_step"]
    loaded = load_checkpoint(save_checkpoint(m, tmp_path / "dy", adapter=llava, step=1), llava)
    after = stepprune.PrunedVLM(llava, loaded).generate(ctx.prompt, 5)
    assert torch.equal(after.tokens, before.tokens)
    assert torch.equal(loaded.last_diagnostics["kept_per_step"], kept)
