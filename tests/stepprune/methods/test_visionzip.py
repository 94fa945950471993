"""VisionZip: D + C tokens, CLS first, dominant by summed CLS attention, the contextual merge, the Qwen port."""

import pytest
import torch
import torch.nn.functional as F

import stepprune
from stepprune.methods.visionzip import contextual_tokens, default_split
from tests.stepprune.methods.prellm_helpers import assert_generation_equals_vanilla, context


def test_default_splits():
    assert [default_split(k, 576, "llava") for k in (64, 128, 192)] == [(54, 10), (108, 20), (162, 30)]
    assert default_split(1, 576, "llava") == (1, 0)
    assert default_split(43, 144, "qwen2_5_vl") == (36, 7)  # C = max(1, int(0.05 N))
    assert default_split(3, 144, "qwen2_5_vl") == (0, 3)  # never more contextual than the budget


def test_contextual_target_plus_mean_of_its_assignees_by_hand():
    x = torch.arange(7 * 2, dtype=torch.float).view(7, 2)
    # Keys: tokens 0-2 point along e0, 3-6 along e1; targets are every 7 // 2 = 3rd token: 0 and 3.
    metric = torch.tensor([[1.0, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1], [0.2, 1], [0.3, 1]])
    targets, tokens = contextual_tokens(x, metric, 2)
    assert targets.tolist() == [0, 3]
    torch.testing.assert_close(tokens[0], x[0] + x[1:3].mean(0))
    torch.testing.assert_close(tokens[1], x[3] + x[4:7].mean(0))
    # Targets 0 and 2 (step 5 // 2); every other token is closest to target 0, so target 2 stays itself.
    lonely = torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [1, 0.2], [1, 0.3]])
    targets, tokens = contextual_tokens(x[:5], lonely, 2)
    assert targets.tolist() == [0, 2]
    torch.testing.assert_close(tokens[0], x[0] + x[[1, 3, 4]].mean(0))
    torch.testing.assert_close(tokens[1], x[2])


@pytest.mark.parametrize("budget,d,c", [(64, 54, 10), (128, 108, 20)])
def test_llava_output_is_cls_then_dominant_in_spatial_order_then_contextual(llava, budget, d, c):
    ctx = context(llava, n=2)
    out = stepprune.build_method("visionzip", budget=budget).select(ctx)
    assert out.count.tolist() == [d + c] * 2
    attn = ctx.vision.attention(-2)[:, :, 0, 1:].sum(1)  # CLIP layer 22: CLS row, summed over heads
    keys = ctx.vision.qk(-2)[1].mean(1)[:, 1:]  # head-averaged keys of the patches
    for b in range(2):
        proj = llava.project(ctx.vision.cls[b][None, None])[0, 0]
        torch.testing.assert_close(out.embeds[b, 0], proj)  # CLS first
        dom = sorted(attn[b].topk(d - 1).indices.tolist())
        assert out.source_index[b, 1:d].tolist() == dom
        torch.testing.assert_close(out.embeds[b, 1:d], ctx.projected()[b, dom])
        rest = [i for i in range(576) if i not in set(dom)]
        step = len(rest) // c
        targets = [rest[j] for j in range(0, len(rest), step)][:c]
        assert out.source_index[b, d:].tolist() == targets
        # The first contextual token by hand: its target plus the mean of the tokens whose best target it is.
        kn = F.normalize(keys[b].float(), dim=-1)
        others = [i for i in rest if i not in set(targets)]
        best = (kn[others] @ kn[targets].T).argmax(1)
        members = [o for o, t in zip(others, best.tolist()) if t == 0]
        x = ctx.vision.tokens[b].float()
        by_hand = x[targets[0]] + (x[members].mean(0) if members else 0)
        torch.testing.assert_close(out.embeds[b, d], llava.project(by_hand[None, None])[0, 0])
    assert stepprune.build_method("visionzip").position_mode_for("llava") == "contiguous"


def test_qwen_port_keeps_d_plus_c_in_spatial_order(qwen):
    ctx = context(qwen, n=1)
    method = stepprune.build_method("visionzip", ratio=0.3)
    out = method.select(ctx)
    d, c = 36, 7  # K = int(0.3 * 144) = 43, C = int(0.05 * 144) = 7
    assert out.count.tolist() == [d + c]
    received = ctx.vision.attention(-1)[0].mean(0).sum(0).view(144, 4).mean(-1)
    dom = set(received.topk(d).indices.tolist())
    rest = [i for i in range(144) if i not in dom]
    targets = [rest[j] for j in range(0, len(rest), len(rest) // c)][:c]
    src = out.source_index[0].tolist()
    assert src == sorted(dom | set(targets))
    for i, s in enumerate(src):  # dominant tokens are the untouched projected tokens
        if s in dom:
            torch.testing.assert_close(out.embeds[0, i], ctx.projected()[0, s])
    assert method.position_mode_for(qwen.family) == "original"


def test_keep_all_on_qwen_reproduces_vanilla(qwen):
    assert_generation_equals_vanilla(qwen, stepprune.build_method("visionzip", ratio=1.0))


def test_keep_all_on_llava_is_cls_plus_vanilla(llava):
    # VisionZip always adds the CLS token on LLaVA, so no setting is an identity; the closest is D = N + 1, C = 0.
    ctx = context(llava, n=2)
    out = stepprune.build_method("visionzip", dominant=577, contextual=0).select(ctx)
    assert out.count.tolist() == [577, 577]
    torch.testing.assert_close(out.embeds[:, 1:], ctx.projected(), rtol=0, atol=0)
    torch.testing.assert_close(out.embeds[:, 0], llava.project(ctx.vision.cls[:, None])[:, 0])


def test_config_errors():
    with pytest.raises(ValueError, match="both dominant and contextual"):
        stepprune.build_method("visionzip", dominant=10)
    with pytest.raises(ValueError, match="is the budget"):
        stepprune.build_method("visionzip", dominant=54, contextual=10, budget=60)


def test_split_that_does_not_fit_is_a_clear_error(llava):
    with pytest.raises(ValueError, match="sample 0: 500 dominant \\+ 100 contextual tokens do not fit 576"):
        stepprune.build_method("visionzip", dominant=500, contextual=100).select(context(llava, n=1))
