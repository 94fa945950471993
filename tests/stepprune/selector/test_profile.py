"""Cost measurements: parameter counts on the meta device and the decoder-step timer."""

import torch

import stepprune
from stepprune.selector import StepPruneConfig
from stepprune.selector.profile import decoder_step_time, parameter_counts


def test_counts_match_a_built_selector(llava):
    cfg = StepPruneConfig(d=32, heads=4, k_max=24)
    torch.manual_seed(0)
    built = stepprune.build_method("stepprune", cfg).bind(llava)
    counts = parameter_counts(built.config)
    assert counts["total"] == sum(p.numel() for p in built.parameters())
    assert counts["encoder"] + counts["decoder"] + counts["denoiser"] == counts["total"]


def test_llava_7b_decoder_step_reads_the_expected_weights():
    d = 1024
    cfg = StepPruneConfig(d=d, heads=16, decoder_layers=2, d_tok=1024, d_llm=4096, token_group=1)
    counts = parameter_counts(cfg)
    per_layer = 14 * d * d + 17 * d  # qkv, self-out, cross-q, cross-out, FFN 4x, three LayerNorms
    assert counts["decoder_per_step"] == 2 * per_layer + 2 * d + d * d + d  # + LN_out + pointer query
    assert counts["text_projection"] == 4096 * d + d  # W_t with bias
    assert 70e6 < counts["total"] < 90e6  # spec Sec. 7.1 estimates ~78M (DiffPrune: 84M)


def test_decoder_step_timer_runs_the_requested_steps():
    cfg = StepPruneConfig(d=16, heads=2, d_tok=16, d_llm=16, token_group=1)
    out = decoder_step_time(cfg, batch=2, tokens=30, steps=6, repeats=1, threads=1)
    assert out["per_step_s"] > 0 and out["steps"] == 6 and out["threads"] == 1
