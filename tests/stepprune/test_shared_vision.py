"""Methods answering from one shared vision pass (``PrunedVLM.generate(..., vision=)``, what the held-out check
does) answer exactly as each does from its own pass: no method writes into the features it reads."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import stepprune


@pytest.mark.usefixtures("one_thread")
def test_every_method_answers_alike_from_a_shared_vision_pass(llava):
    # LLaVA: 576 tokens, so every method's budget presets apply (SparseVLM's schedules exist for 64/128/192 of 576)
    adapter = llava
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(3)]
    prompt = adapter.prepare(images, [f"How many objects are there in picture {i}?" for i in range(3)],
                             keys=[str(i) for i in range(3)])
    methods = {name: stepprune.build_method(name, {"budget": 64} if cls.budgeted else {})
               for name, cls in sorted(stepprune.METHODS.items())}
    with torch.no_grad():
        vision = adapter.vision_features(prompt)
    before = vision.tokens.clone()
    shared = {name: stepprune.PrunedVLM(adapter, m).generate(prompt, max_new_tokens=3, vision=vision)
              for name, m in methods.items()}
    assert torch.equal(vision.tokens, before)
    for name, m in methods.items():
        own = stepprune.PrunedVLM(adapter, m).generate(prompt, max_new_tokens=3)
        assert torch.equal(own.tokens, shared[name].tokens), name
        assert torch.equal(own.kept, shared[name].kept), name
        assert own.final_index == shared[name].final_index, name
    # the features given are the ones used: other features, other answers
    noise = dataclasses.replace(vision, tokens=torch.randn_like(vision.tokens) * 10)
    other = stepprune.PrunedVLM(adapter, methods["vanilla"]).generate(prompt, max_new_tokens=3, vision=noise)
    assert not torch.equal(other.tokens, shared["vanilla"].tokens)
