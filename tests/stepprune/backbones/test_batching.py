"""A batch of mixed prompt lengths, image sizes and kept counts equals its samples run one by one."""

import torch

from stepprune.backbones.types import VisualTokens
from tests.conftest import PROMPTS, make_images


def _run(adapter, images, prompts, keep_rows):
    prompt = adapter.prepare(images, prompts)
    vision = adapter.vision_features(prompt)
    proj = adapter.project(vision.tokens)
    kmax = max(max(len(r) for r in keep_rows), 1)
    index = torch.zeros(len(keep_rows), kmax, dtype=torch.long)
    for b, r in enumerate(keep_rows):
        index[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    count = torch.tensor([len(r) for r in keep_rows])
    inputs = adapter.splice(prompt, VisualTokens.gather(proj, index, count), vision, "original")
    logits = [adapter.runner.logits(h[v]) for h, v in zip(adapter.forward(inputs).hidden, inputs.valid)]
    return logits, adapter.generate(inputs, max_new_tokens=6).tokens


def test_batch_equals_samples_one_by_one(adapter):
    n = 576 if adapter.family == "llava" else 144
    keep = [list(range(0, n, 97)), list(range(n)), []]  # 6 tokens, all tokens, blind
    images, prompts = make_images(3, seed=7), PROMPTS
    batch_logits, batch_tokens = _run(adapter, images, prompts, keep)
    for b in range(3):
        single_logits, single_tokens = _run(adapter, images[b: b + 1], prompts[b: b + 1], keep[b: b + 1])
        torch.testing.assert_close(batch_logits[b], single_logits[0], rtol=0, atol=1e-5)
        assert torch.equal(batch_tokens[b], single_tokens[0])


def test_qwen_batch_with_different_image_sizes(qwen):
    images = [make_images(1, size=(96, 96))[0], make_images(1, seed=3, size=(128, 64))[0]]
    prompt = qwen.prepare(images, PROMPTS[:2])
    vision = qwen.vision_features(prompt)
    n = vision.num_tokens.tolist()
    assert n[0] != n[1] and vision.tokens.shape[1] == max(n)
    keep = [list(range(0, n[0], 3)), list(range(1, n[1], 2))]
    batch_logits, batch_tokens = _run(qwen, images, PROMPTS[:2], keep)
    for b in range(2):
        single_logits, single_tokens = _run(qwen, images[b: b + 1], PROMPTS[b: b + 1], keep[b: b + 1])
        torch.testing.assert_close(batch_logits[b], single_logits[0], rtol=0, atol=1e-5)
        assert torch.equal(batch_tokens[b], single_tokens[0])
