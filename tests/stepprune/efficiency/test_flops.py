"""The meta-device FLOP counter against closed-form counts (stepprune.md Sec. 9.3), on small configs."""

import pytest
import torch

import stepprune
from stepprune.efficiency import MetaScene, PromptShape, build_adapter, count_flops, method_flops
from stepprune.efficiency import analytic as A
from stepprune.efficiency.costs import COST_MODELS
from stepprune.efficiency.flops import prefill_flops, projector_flops, vision_flops
from stepprune.efficiency.scene import META
from stepprune.selector.loop import LoopState, run_steps, selection_limits

SHAPE = PromptShape(prefix=7, suffix=9, question=5)


def _scene(config, batch=1, image_size=None):
    return MetaScene(build_adapter(config), SHAPE, batch, image_size)


def test_counter_matches_the_closed_form_on_a_small_llava(llava_small):
    scene = _scene(llava_small, batch=2)
    N = scene.num_tokens
    assert N == 16
    assert vision_flops(scene) == 2 * A.vit_flops(16, 3 * 14 * 14, 64, 128, 2)
    assert projector_flops(scene, 5) == 2 * A.llava_projector_flops(5, 64, 96)
    text = SHAPE.text
    for schedule in ([N] * 3, [N, 4, 4], [N, N, 0]):
        expected = A.llm_prefill_flops([text + v for v in schedule], 96, 48, 160, 500)
        assert prefill_flops(scene, schedule) == 2 * expected


def test_stepprune_count_matches_the_closed_form(llava_small):
    scene = _scene(llava_small)
    cfg = {"d": 32, "heads": 4, "k_max": 12}
    k = 5
    flops = method_flops(scene, stepprune.build_method("stepprune", cfg), k=k)
    parts = A.stepprune_flops(16, SHAPE.question, d=32, d_tok=64, d_llm=96, steps=k + 1, k_max=12)
    assert parts["input_projection"] > 0  # d_tok 64 != d 32: the encoder projects the tokens
    assert flops.method == parts["total"]
    assert flops.projector == A.llava_projector_flops(k, 64, 96)
    assert flops.per_layer == [k] * 3 and flops.visual == k
    capped = method_flops(scene, stepprune.build_method("stepprune", cfg), k=12)  # at the cap: no stop step
    assert capped.method == A.stepprune_flops(16, SHAPE.question, d=32, d_tok=64, d_llm=96, steps=12,
                                              k_max=12)["total"]


def test_counting_one_loop_step_and_multiplying_is_exact(llava_small):
    """The cost model counts one step and multiplies; steps over the static cache must all cost the same."""
    scene = _scene(llava_small)
    with torch.device("meta"):
        sel = stepprune.build_method("stepprune", {"d": 32, "heads": 4, "k_max": 9}).bind(scene.adapter)
    vision = scene.vision()
    text, tmask = scene.question_embeds()
    mem = sel.decoder.memory(sel.encoder(vision.tokens, vision.token_mask, text, tmask, 1.0))
    limits = selection_limits(vision.num_tokens, 1, 9, None)

    def steps(n):
        st = LoopState.allocate(sel.decoder, 1, 17, 9, META, torch.float32).reset_(sel.decoder, vision.token_mask)
        return count_flops(lambda: run_steps(sel.decoder, mem, st, *limits, n))

    assert steps(7) == 7 * steps(1) > 0


def test_the_closed_form_reproduces_the_design_estimates():
    """Sec. 9.3 at d = 1024, L_dec = 2, N = 576, L_text = 60: 35.3 G, 0.5 G, 6.1 G, ~67 M per step, CLIP 0.38 T,
    and the 124 / 636-token prefills (the design also counts the LM head on every position: 1.68 / 8.79 T)."""
    sp = A.stepprune_flops(576, 60, steps=64)
    assert sp["encoder"] / 1e9 == pytest.approx(35.3, abs=0.05)
    assert sp["text_projection"] / 1e9 == pytest.approx(0.5, abs=0.01)
    assert sp["memory"] / 1e9 == pytest.approx(6.1, abs=0.06)
    assert sp["step"] / 1e6 == pytest.approx(67, rel=0.05)
    assert sp["total"] / 1e9 == pytest.approx(46, rel=0.02)
    assert A.vit_flops(576, 3 * 14 * 14, 1024, 4096, 24) / 1e12 == pytest.approx(0.38, abs=0.005)
    head_all = lambda n: A.linear(n - 1, 4096, 32000)  # noqa: E731  (the design's LM head on every position)
    for tokens, design in ((124, 1.68), (636, 8.79)):
        ours = A.llm_prefill_flops([tokens] * 32, 4096, 4096, 11008, 32000) + head_all(tokens)
        assert ours / 1e12 == pytest.approx(design, rel=0.02)


def test_every_registered_method_has_a_cost_model():
    assert set(stepprune.METHODS) <= set(COST_MODELS)


@pytest.mark.parametrize("name", sorted(stepprune.METHODS))
def test_every_cost_model_runs_on_both_families_at_meta(name, llava_small, qwen_small):
    cls = stepprune.method_class(name)
    for config, size in ((llava_small, None), (qwen_small, 32)):
        scene = _scene(config, batch=2, image_size=size)
        # a third of the tokens: SparseVLM's 192-of-576 preset
        method = stepprune.build_method(name, {"ratio": 1 / 3} if cls.budgeted else {})
        if name == "stepprune":
            method = stepprune.build_method(name, {"d": 32, "heads": 4, "k_max": 12})
        f = method_flops(scene, method, k=scene.num_tokens // 3 if name == "stepprune" else None)
        assert f.prefill > 0 and f.vision > 0 and len(f.per_layer) == scene.adapter.num_layers
        assert max(f.per_layer) <= scene.num_tokens + 4  # recycled clusters / DART's pivots on top of the budget
        if cls.hook_point == "pre_llm" or name == "stepprune":
            assert f.per_layer == [f.visual] * len(f.per_layer)
