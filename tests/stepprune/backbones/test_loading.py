"""Loading local HF folders: both families through from_pretrained, and clear errors."""

import json

import pytest

import stepprune
from stepprune.backbones import LlavaAdapter, Qwen25VLAdapter


def test_both_families_load_from_local_folders(llava, qwen):
    assert isinstance(llava, LlavaAdapter) and isinstance(qwen, Qwen25VLAdapter)
    for a in (llava, qwen):
        assert not a.model.training
        assert not any(p.requires_grad for p in a.model.parameters())  # frozen


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone folder not found"):
        stepprune.load_backbone(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        stepprune.load_backbone(tmp_path)


def test_unknown_model_type_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' has no adapter"):
        stepprune.load_backbone(tmp_path)


def test_weights_load_only_from_safetensors(tiny_llava_dir, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_llava_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError):
        stepprune.load_backbone(folder)
