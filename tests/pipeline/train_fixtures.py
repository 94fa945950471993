"""A tiny end-to-end training setup: random tiny backbone, a small instruction corpus, a fast selector config."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_images

# A deliberately small StepPrune selector so a CPU step takes well under a second.
TINY_SELECTOR = {"d": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "k_max": 24}


def write_train_corpus(root: Path, n: int = 24) -> Path:
    """``root/instruct/train.json`` + images: ``n`` two-turn conversations."""
    folder = root / "instruct"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, im in enumerate(make_images(n, seed=21)):
        im.save(folder / "images" / f"{i}.png")
        records.append({"id": str(i), "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the square?"}, {"from": "gpt", "value": "red"},
            {"from": "human", "value": "Is there a circle?"}, {"from": "gpt", "value": "yes" if i % 2 else "no"}]})
    (folder / "train.json").write_text(json.dumps(records))
    return folder / "train.json"


def train_overrides(root: Path, backbone: Path, **extra) -> list[str]:
    """Dotted overrides of the embedded config for a fast CPU run under ``root``."""
    corpus = write_train_corpus(root)
    values = {
        "backbone.path": str(backbone),
        "data.corpus": str(corpus),
        "data.image_folder": str(corpus.parent),
        "data.shards": str(root / "shards"),
        "data.synthvqa": None,
        "data.preprocess_batch_size": 8,
        "method.config": json.dumps(TINY_SELECTOR),
        "train.global_batch_size": 4,
        "train.micro_batch_size": 2,
        "train.max_steps": 6,
        "train.report_every": 1,
        "train.checkpoint_every": 1,
        "train.threads_per_worker": 1,
        "scaling.num_workers": 2,
        "scaling.cpus_per_worker": 1,
        "storage.root": str(root / "runs"),
        "storage.name": "t",
        "eval.enabled": False,
        # the embedded default's warm start reads SynthVQA's native training split, which this corpus has not
        "train.warm_start": None,
        "train.trainable": None,
    }
    if any(k.startswith("train.warm_start.") for k in extra):
        del values["train.warm_start"]
    values.update(extra)
    return [f"{k}={'null' if v is None else v}" for k, v in values.items()]
