"""DART: B + 4 image tokens survive, and they are the least similar to the pivots (keys and hidden states from
the unmodified HF model)."""

import pytest
import torch
import torch.nn.functional as F

import stepprune
from stepprune.methods.dart import dart_keep
from tests.stepprune.methods.inllm_reference import context, hf_outputs, kept_visual, pruned_prefill


def _config(adapter):
    return {"budget": 64} if adapter.family == "llava" else {"ratio": 0.5}


def test_keeps_b_plus_4_tokens_least_similar_to_the_pivots(adapter):
    ctx = context(adapter, seed=5)
    method = stepprune.build_method("dart", **_config(adapter))
    res = pruned_prefill(adapter, ctx, method)
    n = int(ctx.vision.num_tokens[0])
    budget = method.config.keep_count(n)
    per_pivot = budget // 8
    assert res.visual_per_layer[0].tolist() == [n, n, 4 + 8 * per_pivot, 4 + 8 * per_pivot]
    if adapter.family == "llava":
        assert 4 + 8 * per_pivot == 68  # "B + 4"

    # Reference pivots from HF's own cache (post-RoPE keys of layer 1; repeating GQA heads scales every L1 norm
    # alike) and duplication space from HF's hidden states entering layer 2 under the final norm.
    out, start, _ = hf_outputs(adapter, ctx.prompt)
    keys = out.past_key_values.layers[1].keys[0]  # (H_kv, L, d)
    l1 = keys.float().abs().sum(dim=(0, 2))
    img = torch.arange(start, start + n)
    txt = torch.arange(start + n, l1.numel())
    img_piv = img[l1[img].topk(4).indices]
    txt_piv = txt[l1[txt].topk(4).indices]
    h = adapter.text_model.norm(out.hidden_states[2][0]).float()

    index, _ = kept_visual(res)
    assert index.numel() == 4 + 8 * per_pivot and (index.diff() > 0).all()
    kept = start + index
    assert torch.isin(img_piv, kept).all()  # image pivots are kept
    dropped = img[~torch.isin(img, kept)]
    chosen = kept[~torch.isin(kept, img_piv)]
    for p in torch.cat([img_piv, txt_piv]):
        # Each pivot chose T tokens that are no more similar to it than any token that was dropped.
        sim_dropped = F.cosine_similarity(h[p][None], h[dropped]).min()
        sim_chosen = F.cosine_similarity(h[p][None], h[chosen])
        assert int((sim_chosen <= sim_dropped + 1e-5).sum()) >= per_pivot


def test_greedy_selection_on_a_toy_example():
    # 6 image slots, 1 image pivot (slot 0, largest key norm), 1 text pivot (slot 7), T = 2 per pivot.
    key_l1 = torch.tensor([9.0, 1, 1, 1, 1, 1, 0, 5, 0])
    h = torch.tensor([[1.0, 0], [1, 0.1], [-1, 0], [0, 1], [1, 0.2], [-1, 0.1], [0, 0], [0, 1], [0, 0]])
    image, text = torch.arange(6), torch.tensor([7, 8])
    kept, order = dart_keep(key_l1, h, image, text, per_pivot=2, pivots_image=1, pivots_text=1)
    assert order == [0, 7]
    # Pivot 0 takes the two least similar to (1, 0): slots 2 and 5. Pivot 7 = (0, 1) then takes from {1, 3, 4} the
    # two least similar: 1 and 4.
    assert kept.tolist() == [0, 1, 2, 4, 5]
    kept, _ = dart_keep(key_l1, h, image, text, per_pivot=0, pivots_image=1, pivots_text=1)
    assert kept.tolist() == [0]  # below 8 tokens only the image pivots survive (llmc's T = B // 8 = 0)


def test_pivot_order_is_the_official_set_iteration_over_unpadded_indices():
    # Pivots at unpadded indices 40 and 3 (image) and 70 (text): CPython iterates {40, 3, 70} by index modulo its
    # table size (8): [40, 3, 70], not ascending; padding must not change that order.
    key_l1 = torch.zeros(80)
    key_l1[[40, 3, 70]] = torch.tensor([3.0, 2.0, 1.0])
    h = torch.randn(80, 4, generator=torch.Generator().manual_seed(0))
    image, text = torch.arange(0, 60), torch.arange(60, 80)
    _, order = dart_keep(key_l1, h, image, text, 3, 2, 1)
    assert order == list({40, 3, 70}) == [40, 3, 70]
    _, shifted = dart_keep(torch.cat([torch.zeros(5), key_l1]), torch.cat([torch.zeros(5, 4), h]),
                           image + 5, text + 5, 3, 2, 1, offset=5)
    assert shifted == [i + 5 for i in order]


def test_no_budget_means_no_hook_and_config_errors(llava):
    assert stepprune.build_method("dart").llm_hooks(context(llava)) == []
    with pytest.raises(ValueError, match="pivot_text_tokens must be an integer >= 0"):
        stepprune.build_method("dart", budget=64, pivot_text_tokens=-1)
