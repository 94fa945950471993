"""The tiny-backbone factory: offline, deterministic by seed, loadable with from_pretrained."""

import torch
from safetensors.torch import load_file
from transformers import AutoProcessor

from stepprune.backbones.tiny import build_tiny_llava


def test_build_is_deterministic_and_complete(tmp_path):
    a = build_tiny_llava(tmp_path / "a", seed=5)
    b = build_tiny_llava(tmp_path / "b", seed=5)
    c = build_tiny_llava(tmp_path / "c", seed=6)
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
                 "chat_template.jinja", "tiny_backbone.json"):
        assert (a / name).is_file(), name


def test_processor_round_trip_expands_576_image_tokens(tiny_llava_dir):
    proc = AutoProcessor.from_pretrained(tiny_llava_dir)
    from tests.conftest import make_images

    enc = proc(images=make_images(1), text=["USER: <image>\nHi ASSISTANT:"], return_tensors="pt")
    assert int((enc.input_ids == proc.tokenizer.convert_tokens_to_ids("<image>")).sum()) == 576
    assert enc.pixel_values.shape == (1, 3, 96, 96)
