"""A per-key attention bias carried in the keys (flash kernel) computes what the same bias as a float mask does."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from stepprune.backbones.hooks import AttentionBias
from stepprune.backbones.key_bias_attention import key_bias_sdpa_forward
from stepprune.backbones.types import VISUAL
from stepprune.selector.gate import attention_gate
from tests.conftest import PROMPTS, make_images


def _inputs(adapter, n=2, seed=0):
    prompt = adapter.prepare(make_images(n, seed=seed), PROMPTS[:n])
    vision = adapter.vision_features(prompt)
    return adapter.splice(prompt, adapter.keep_all(vision), vision), vision


def _key_bias(g, per_key: bool, layer: int = 0):
    """log g on visual keys as a per-key bias, or the same values laid out as a full (B, L, L) bias."""
    def bias(ctx):
        st = ctx.state
        column = torch.gather(torch.log(g), 1, st.visual_index.clamp(0, g.shape[1] - 1).long())
        column = torch.where((st.segment == VISUAL) & st.valid, column, 0.0)
        return column if per_key else column[:, None, :].expand(-1, column.shape[1], -1)

    return AttentionBias(layer, bias, per_key=per_key)


@pytest.mark.parametrize("layer", [0, 2])
def test_key_channel_equals_the_float_mask_in_value_and_gradient(adapter, layer):
    inputs, vision = _inputs(adapter, seed=5)
    g0 = torch.rand(vision.token_mask.shape, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    out, grads = {}, {}
    for per_key in (True, False):
        g = g0.clone().requires_grad_(True)
        res = adapter.forward(inputs, biases=[_key_bias(g, per_key, layer)])
        loss = (res.hidden[inputs.valid] ** 2).mean()
        loss.backward()
        out[per_key], grads[per_key] = res.hidden.detach(), g.grad
    torch.testing.assert_close(out[True], out[False], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)
    assert grads[True].abs().sum() > 0
    plain = adapter.forward(inputs).hidden
    assert not torch.allclose(out[True], plain, atol=1e-4)  # the bias did act


def test_the_attention_gate_is_per_key_and_at_one_changes_nothing(llava):
    inputs, vision = _inputs(llava, seed=2)
    gate = attention_gate(torch.ones(vision.token_mask.shape))
    assert gate.per_key
    torch.testing.assert_close(llava.forward(inputs, biases=[gate]).hidden, llava.forward(inputs).hidden,
                               rtol=0, atol=1e-5)


def test_per_key_and_full_biases_add_up(llava):
    # Both kinds at once go to one float mask; it must equal the sum laid out as two full biases.
    inputs, vision = _inputs(llava, seed=6)
    g = torch.rand(vision.token_mask.shape, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    mixed = llava.forward(inputs, biases=[_key_bias(g, True), _key_bias(g.sqrt(), False)]).hidden
    full = llava.forward(inputs, biases=[_key_bias(g, False), _key_bias(g.sqrt(), False)]).hidden
    torch.testing.assert_close(mixed, full, rtol=1e-5, atol=1e-5)


def test_the_model_keeps_its_attention_implementation(llava):
    inputs, vision = _inputs(llava, n=1)
    before = llava.runner.config._attn_implementation
    llava.forward(inputs, biases=[attention_gate(torch.full(vision.token_mask.shape, 0.5))])
    assert llava.runner.config._attn_implementation == before

    def broken(ctx):
        raise RuntimeError("bias failed")

    with pytest.raises(RuntimeError, match="bias failed"):
        llava.forward(inputs, biases=[AttentionBias(0, broken, per_key=True)])
    assert llava.runner.config._attn_implementation == before


def test_a_per_key_bias_of_the_wrong_shape_is_refused(llava):
    inputs, _ = _inputs(llava, n=1)
    with pytest.raises(ValueError, match=r"returned shape \(1, 3\), expected \(1, \d+\)"):
        llava.forward(inputs, biases=[AttentionBias(0, lambda ctx: torch.zeros(1, 3), per_key=True)])


class _Module(torch.nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


@pytest.mark.parametrize("groups", [1, 2])
def test_the_function_alone_against_sdpa(groups):
    gen = torch.Generator().manual_seed(0)
    B, H, L, d = 2, 4, 9, 8
    q = torch.randn(B, H, L, d, generator=gen)
    k, v = (torch.randn(B, H // groups, L, d, generator=gen) for _ in range(2))
    allowed = torch.ones(L, L, dtype=torch.bool).tril()[None, None].expand(B, 1, L, L)
    module = _Module(groups)
    plain, _ = sdpa_attention_forward(module, q, k, v, allowed, scaling=d ** -0.5)
    same, _ = key_bias_sdpa_forward(module, q, k, v, allowed, scaling=d ** -0.5)
    assert torch.equal(same, plain)  # no key_bias: HF's own function
    b = torch.randn(B, L, generator=gen)
    got, _ = key_bias_sdpa_forward(module, q, k, v, allowed, scaling=d ** -0.5, key_bias=b)
    mask = torch.where(allowed, b[:, None, None, :], float("-inf"))
    want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=d ** -0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="boolean attention mask"):
        key_bias_sdpa_forward(module, q, k, v, mask, scaling=d ** -0.5, key_bias=b)
    with pytest.raises(ValueError, match="key_bias must be"):
        key_bias_sdpa_forward(module, q, k, v, allowed, key_bias=b[:, :3])


def test_eager_attention_takes_a_per_key_bias_as_a_float_mask(tiny_llava_dir, llava):
    # Eager attention has no key channel: the runner lays the bias out as the float mask, same values as SDPA's.
    import stepprune

    eager = stepprune.load_backbone(tiny_llava_dir, attn_implementation="eager")
    inputs, vision = _inputs(eager, seed=3)
    g = torch.rand(vision.token_mask.shape, generator=torch.Generator().manual_seed(2)) * 0.9 + 0.05
    got = eager.forward(inputs, biases=[attention_gate(g)]).hidden
    assert eager.runner.config._attn_implementation == "eager"
    want = llava.forward(inputs, biases=[attention_gate(g)]).hidden
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
