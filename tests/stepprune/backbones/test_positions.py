"""Position ids of pruned sequences, for both conventions on both backbones, and decode positions."""

import torch

from stepprune.backbones.types import PREFIX, SUFFIX, VISUAL, VisualTokens
from tests.conftest import PROMPTS, make_images
from tests.stepprune.backbones.reference import cache_free_greedy


def _pruned(adapter, prompt, keep_rows, mode):
    vision = adapter.vision_features(prompt)
    proj = adapter.project(vision.tokens)
    kmax = max(len(r) for r in keep_rows)
    index = torch.zeros(len(keep_rows), kmax, dtype=torch.long)
    for b, r in enumerate(keep_rows):
        index[b, : len(r)] = torch.tensor(r)
    count = torch.tensor([len(r) for r in keep_rows])
    return adapter.splice(prompt, VisualTokens.gather(proj, index, count), vision, mode), vision


def test_llava_original_positions_keep_gaps_and_offsets(llava):
    prompt = llava.prepare(make_images(2), PROMPTS[:2])
    keep = [[0, 5, 100, 575], [3, 4, 200]]
    inputs, vision = _pruned(llava, prompt, keep, "original")
    for b in range(2):
        v = inputs.valid[b]
        seg, pos = inputs.segment[b][v], inputs.positions[b][v]
        n_prefix = int((seg == PREFIX).sum())
        assert pos[seg == PREFIX].tolist() == list(range(n_prefix))
        assert pos[seg == VISUAL].tolist() == [n_prefix + i for i in keep[b]]
        n_suffix = int((seg == SUFFIX).sum())
        assert pos[seg == SUFFIX].tolist() == list(range(n_prefix + 576, n_prefix + 576 + n_suffix))
        # Generation continues from the unpruned length.
        assert int(inputs.next_position[b]) == int(prompt.attention_mask[b].sum())


def test_llava_contiguous_positions_reindex(llava):
    prompt = llava.prepare(make_images(2), PROMPTS[:2])
    inputs, _ = _pruned(llava, prompt, [[0, 5, 100], [7]], "contiguous")
    for b in range(2):
        n = int(inputs.valid[b].sum())
        assert inputs.positions[b][inputs.valid[b]].tolist() == list(range(n))
        assert int(inputs.next_position[b]) == n


def test_qwen_original_positions_are_the_kept_tokens_mrope_ids(qwen):
    prompt = qwen.prepare(make_images(2), PROMPTS[:2])
    keep = [[0, 13, 77, 143], [5, 6]]
    inputs, _ = _pruned(qwen, prompt, keep, "original")
    full, deltas = qwen.model.model.get_rope_index(prompt.input_ids, prompt.extra["mm_token_type_ids"],
                                                   prompt.pixel_inputs["image_grid_thw"], attention_mask=prompt.attention_mask)
    for b in range(2):
        am = prompt.attention_mask[b].bool()
        ids = prompt.input_ids[b][am]
        start = int((ids == qwen.image_token_id).nonzero()[0])
        ref = full[:, b][:, am]
        ours = inputs.positions[:, b][:, inputs.valid[b]]
        seg = inputs.segment[b][inputs.valid[b]]
        assert torch.equal(ours[:, seg == VISUAL], ref[:, [start + i for i in keep[b]]])
        assert torch.equal(ours[:, seg == SUFFIX], ref[:, start + 144:])
        # rope_deltas of the unpruned sequence: decoding continues from max + 1 on all three axes.
        assert int(inputs.next_position[b]) == int(ref.max()) + 1 == int(deltas[b]) + int(am.sum())


def test_qwen_contiguous_positions_are_text_style(qwen):
    prompt = qwen.prepare(make_images(1), PROMPTS[:1])
    inputs, _ = _pruned(qwen, prompt, [[1, 2, 50]], "contiguous")
    n = int(inputs.valid[0].sum())
    for axis in range(3):
        assert inputs.positions[axis, 0][inputs.valid[0]].tolist() == list(range(n))


def test_cached_decoding_uses_the_same_positions_as_recomputation(adapter):
    # The KV-cached decoder must place each new token exactly where a full recomputation would.
    prompt = adapter.prepare(make_images(2, seed=5), PROMPTS[:2])
    n = 144 if adapter.family != "llava" else 576
    keep = [list(range(0, n, 7)), list(range(3, n, 11))]
    for mode in ("original", "contiguous"):
        inputs, _ = _pruned(adapter, prompt, keep, mode)
        cached = adapter.generate(inputs, max_new_tokens=5).tokens
        eos = adapter.eos_token_id
        ref = cache_free_greedy(adapter, inputs, 5)
        for b in range(2):  # compare up to (and including) a sample's EOS
            t = cached[b].tolist()
            stop = next((i + 1 for i, x in enumerate(t) if x == eos), len(t))
            assert t[:stop] == ref[b, :stop].tolist()
