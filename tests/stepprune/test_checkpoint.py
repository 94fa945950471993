"""Checkpoints of trainable methods: safetensors weights + config + meta, round trip, clear failures."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import stepprune
from stepprune.backbones.tiny import TinyLlavaSpec, build_tiny_llava, build_tiny_qwen2_5_vl
from stepprune.checkpoint import CONFIG_FILE, META_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"d": 32, "heads": 4, "k_max": 12, "total_steps": 10}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_backbones")
    return {
        "llava": stepprune.load_backbone(build_tiny_llava(root / "llava")),
        "qwen": stepprune.load_backbone(build_tiny_qwen2_5_vl(root / "qwen")),
        "wide_llava": stepprune.load_backbone(build_tiny_llava(root / "wide", TinyLlavaSpec(vision_hidden=48))),
    }


def _batch(adapter, n=3):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(n)]
    qs = ["What color is the square?", "How many objects are there?", "Is there a red circle in the image?"][:n]
    prompt = adapter.prepare(imgs, qs, ["red", "three", "yes"][:n])
    return stepprune.SelectionContext(adapter, prompt, adapter.vision_features(prompt))


def _trained(adapter, steps=3):
    """A selector after a few optimizer steps (weights and buffers away from their initial values)."""
    torch.manual_seed(0)
    method = stepprune.build_method("stepprune", SMALL).bind(adapter)
    ctx = _batch(adapter)
    opt = torch.optim.AdamW(method.parameters(), lr=1e-2)
    for step in range(steps):
        out = method.train_forward(ctx, step)
        loss = adapter.lm_loss(adapter.forward(adapter.splice(ctx.prompt, out.visual, ctx.vision))) + out.aux_loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return method, ctx


def test_round_trip_reproduces_the_selection_exactly(backbones, tmp_path):
    llava = backbones["llava"]
    method, ctx = _trained(llava)
    before = method.select(ctx)
    folder = save_checkpoint(method, tmp_path / "ckpt", adapter=llava, step=3)
    assert {p.name for p in folder.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE, META_FILE}
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["method"] == "stepprune" and meta["step"] == 3 and meta["backbone"]["family"] == "llava"
    assert meta["backbone"]["path"] == str(llava.path) and len(meta["config_hash"]) == 64 and meta["code_version"]
    record = json.loads((folder / CONFIG_FILE).read_text())
    assert record["method"] == "stepprune" and record["config"]["d_tok"] == 32 and record["config"]["d_llm"] == 32

    loaded = load_checkpoint(folder, llava)
    assert isinstance(loaded, stepprune.StepPrune) and not loaded.training
    for key, value in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert float(loaded.kbar.value) != SMALL["k_max"]  # buffers (k_bar, noise scale) travel too
    after = loaded.select(ctx)
    assert torch.equal(after.source_index, before.source_index) and torch.equal(after.count, before.count)
    assert torch.equal(after.embeds, before.embeds)


def test_training_free_methods_round_trip(backbones, tmp_path):
    method = stepprune.build_method("random", budget=8, seed=3)
    loaded = load_checkpoint(save_checkpoint(method, tmp_path / "rnd", backbone="none"))
    assert loaded.config == method.config


def test_a_mismatched_backbone_fails_clearly(backbones, tmp_path):
    method, _ = _trained(backbones["llava"], steps=1)
    folder = save_checkpoint(method, tmp_path / "ckpt", adapter=backbones["llava"])
    with pytest.raises(ValueError, match="trained on a llava backbone, not qwen2_5_vl"):
        load_checkpoint(folder, backbones["qwen"])
    with pytest.raises(ValueError, match=r"d_tok \(visual token width\): selector has 32, backbone has 48"):
        load_checkpoint(folder, backbones["wide_llava"])
    # without family information (a checkpoint saved without an adapter) the dimension check still catches it
    bare = save_checkpoint(method, tmp_path / "bare")
    with pytest.raises(ValueError, match="d_tok"):
        load_checkpoint(bare, backbones["qwen"])


def test_missing_or_inconsistent_files_fail_clearly(backbones, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "nowhere")
    method, _ = _trained(backbones["llava"], steps=1)
    folder = save_checkpoint(method, tmp_path / "ckpt", adapter=backbones["llava"])
    (folder / WEIGHTS_FILE).rename(folder / "moved.safetensors")
    with pytest.raises(FileNotFoundError, match=f"has no {WEIGHTS_FILE}"):
        load_checkpoint(folder)
    (folder / "moved.safetensors").rename(folder / WEIGHTS_FILE)
    record = json.loads((folder / CONFIG_FILE).read_text())
    record["config"]["d"] = 64
    (folder / CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="config hash"):
        load_checkpoint(folder)


def test_weights_that_do_not_fit_the_config_fail_clearly(backbones, tmp_path):
    from safetensors.torch import save_file

    method, _ = _trained(backbones["llava"], steps=1)
    folder = save_checkpoint(method, tmp_path / "ckpt", adapter=backbones["llava"])
    state = {k: v for k, v in method.state_dict().items() if k != "decoder.stop"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="missing.*decoder.stop"):
        load_checkpoint(folder)


def test_an_unbuilt_selector_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="bind"):
        save_checkpoint(stepprune.build_method("stepprune", SMALL), tmp_path / "x")
