"""Pretraining the embedded default backbone from scratch on SynthVQA: the model-side pieces, pure PyTorch.

* :mod:`.spec` — the LLaVA-1.5-shaped architecture (:class:`BackboneSpec`), its SynthVQA tokenizer and processor,
  the convolution-like starting point of the vision tower;
* :mod:`.targets` — per-patch and image-level ground truth read off the generator's owner map;
* :mod:`.objectives` — the dense per-patch heads and the CLS heads with their losses;
* :mod:`.packing` — all of an image's questions in one sequence (block mask, per-question positions);
* :mod:`.curriculum` — sparse-to-busy scene phases and the images of each step;
* :mod:`.batches` — batches generated on the fly;
* :mod:`.steps` — the two stages' forward passes and losses.

The Ray Train / MLflow loop that drives them is ``pipeline/backbone_pretrain.py``.
"""

from stepprune.backbones.pretrain.curriculum import Curriculum, Phase
from stepprune.backbones.pretrain.objectives import ClsHeads, PatchHeads
from stepprune.backbones.pretrain.packing import PackedQA, QAPacker, collate_packed, segment_mask
from stepprune.backbones.pretrain.spec import BackboneSpec, build_backbone, build_processor, save_backbone
from stepprune.backbones.pretrain.steps import StepOutput, language_step, packed_forward, vision_step
from stepprune.backbones.pretrain.targets import image_targets, patch_targets

__all__ = [
    "BackboneSpec", "ClsHeads", "Curriculum", "PackedQA", "PatchHeads", "Phase", "QAPacker", "StepOutput",
    "build_backbone", "build_processor", "collate_packed", "image_targets", "language_step", "packed_forward",
    "patch_targets", "save_backbone", "segment_mask", "vision_step",
]
