"""Training batches for backbone pretraining, generated on the fly from SynthVQA (no files).

A batch holds, for B images: the processor's ``pixel_values``, the per-patch and image-level targets of the
vision objectives, and (for the language stage) the images' packed questions. Images are rendered by the
generator and preprocessed by the backbone's own image processor, exactly as evaluation preprocesses them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch
from torch import Tensor

from stepprune.backbones.pretrain.packing import QAPacker, collate_packed
from stepprune.backbones.pretrain.targets import image_targets, patch_targets
from stepprune.data.synthvqa.config import SynthVQAConfig
from stepprune.data.synthvqa.sample import make_sample


def make_batch(images: Sequence[tuple[SynthVQAConfig, int]], processor, packer: QAPacker | None = None,
               split: str = "train", families: Collection[str] | None = None) -> dict[str, object]:
    """Generates and encodes one batch.

    Args:
        images: ``(generator config, index)`` per image (see :meth:`.curriculum.Curriculum.images`).
        processor: the backbone's processor (its image processor normalises the pixels).
        packer: when given, the images' questions are packed into ``text`` (the language stage).
        split: the generator split the indices refer to.
        families: pack only these question families (None: all); the scene and its questions are drawn as
            usual, so the images are the same either way.

    Returns:
        ``pixel_values`` (B, 3, H, W); ``patch`` (dict of (B, 576[, 4]) targets); ``image`` (dict of (B, 48)
        and (B,) targets); with a packer ``text`` (``input_ids``, ``labels``, ``positions``, ``segment``, each
        (B, L)), ``families``, ``evidence`` and ``referent_evidence`` (per image, each segment's family, evidence
        patches and per-referent evidence patches).
    """
    samples = [make_sample(cfg, split, index) for cfg, index in images]
    pil = [s.rendered.to_pil() for s in samples]
    pixels = processor.image_processor(images=pil, return_tensors="np")["pixel_values"]
    pt = [patch_targets(s) for s in samples]
    it = [image_targets(s) for s in samples]
    batch: dict[str, object] = {
        "pixel_values": torch.from_numpy(np.asarray(pixels, dtype=np.float32)),
        "patch": {k: torch.from_numpy(np.stack([t[k] for t in pt])) for k in pt[0]},
        "image": {k: torch.from_numpy(np.stack([t[k] for t in it])) for k in it[0]},
    }
    if packer is not None:
        packed = [packer.pack([(q.prompt, q.answer, q.family, q.evidence,
                                [s.geometry[r].patches for r in q.referents]) for q in s.questions
                               if families is None or q.family in families]) for s in samples]
        if not any(p.families for p in packed):
            # Otherwise the step's loss is a mean over zero answer tokens (NaN) and the run diverges silently.
            cfg = images[0][0]
            raise ValueError(f"no question in this batch of {len(images)} images ({cfg.min_objects}-"
                             f"{cfg.max_objects} shapes) is of the asked families "
                             f"{sorted(families) if families is not None else sorted(cfg.family_weights)}: "
                             "a phase must ask families that its scenes can answer (relation needs 2 shapes)")
        batch["text"] = collate_packed(packed, processor.tokenizer.pad_token_id)
        batch["families"] = [p.families for p in packed]
        batch["evidence"] = [p.evidence for p in packed]
        batch["referent_evidence"] = [p.referent_evidence for p in packed]
    return batch


def to_device(batch: dict[str, object], device: torch.device) -> dict[str, object]:
    """Moves every tensor of a (nested) batch to ``device``."""
    def move(x):
        if isinstance(x, Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        return x

    return {k: move(v) for k, v in batch.items()}
