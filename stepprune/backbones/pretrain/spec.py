"""The architecture of the embedded default backbone: a LLaVA-1.5-shaped ``LlavaForConditionalGeneration`` sized
for SynthVQA on a CPU (CLIP-style vision tower, 2-layer GELU MLP projector, small LLaMA), with the offline
byte-level BPE tokenizer trained on SynthVQA's own vocabulary and prompt templates.

LLaVA-1.5 shape: 192 px images in 8 px patches give 24 x 24 = 576 patch tokens plus CLS; the LLM sees the patch
features of the penultimate vision layer (``vision_feature_layer=-2``) with CLS dropped
(``vision_feature_select_strategy="default"``), through the LLaVA chat template. So the last vision layer only
feeds the CLS token; it exists for the image-level objective on CLS (see :mod:`.objectives`), which makes the CLS
attention that VisionZip / PruMerge / HoloV read meaningful.

Example::

    model, processor = build_backbone(BackboneSpec(), seed=0)
    save_backbone(model, processor, "checkpoints/synthvqa-llava-tiny")
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from stepprune.backbones.tiny import DEFAULT_CORPUS, build_tokenizer, llava_config, llava_processor
from stepprune.data.synthvqa.config import SynthVQAConfig
from stepprune.data.synthvqa.prompts import DESCRIBE, LETTER_ANSWER, OCR_PREFIX, SHORT_ANSWER
from stepprune.data.synthvqa.sample import make_sample
from stepprune.data.synthvqa.vocab import COLOR_NAMES, NUMBER_WORDS, SHAPE_PLURALS, SHAPES, SIZE_NAMES, WORDS


# Angular frequencies (radians per patch) of the grid position code: one low frequency to break aliasing, the
# others up to near Nyquist, so that sum_k cos(w_k d) peaks sharply at d = 0 on a 24-patch axis.
POSITION_FREQS = (math.pi / 24, math.pi / 12, math.pi / 6, math.pi / 4, math.pi / 3, math.pi / 2,
                  2 * math.pi / 3, 5 * math.pi / 6)
POSITION_DIMS = 4 * len(POSITION_FREQS)  # (cos, sin) x (row, column) x frequencies
# Offsets (rows, columns) that the heads of the first vision layers look at initially, one per head: the
# 4-neighbourhood, the diagonals, then two patches away; later layers start global (HF's random init).
LOCAL_OFFSETS = (((0, 1), (0, -1), (1, 0), (-1, 0)),
                 ((1, 1), (1, -1), (-1, 1), (-1, -1)),
                 ((0, 2), (0, -2), (2, 0), (-2, 0)))


@dataclasses.dataclass
class BackboneSpec:
    """Sizes of the SynthVQA LLaVA. Defaults: 192 px, patch 8, 576 patch tokens, about 3 M parameters.

    Attributes:
        image_size: input resolution (pixels per side).
        patch_size: CLIP patch size; (image_size / patch_size)^2 patch tokens.
        vision_hidden: CLIP width.
        vision_layers: CLIP depth; the LLM reads layer ``vision_layers - 1`` (feature layer -2), the last layer
            feeds only CLS.
        vision_heads: CLIP attention heads.
        vision_intermediate: CLIP MLP width.
        text_hidden: LLaMA width (also the projector's output width).
        text_layers: LLaMA depth.
        text_heads: LLaMA attention heads.
        text_kv_heads: LLaMA key/value heads (= heads: plain multi-head attention, as LLaVA-1.5's Vicuna).
        text_intermediate: LLaMA MLP width.
        vocab_size: BPE vocabulary target (merges stop earlier when the corpus runs out of pairs).
        max_position_embeddings: LLaMA context length.
        tokenizer_images: train-split images whose prompts and answers join the tokenizer corpus.
        local_layers: vision layers whose heads start as fixed-offset (convolution-like) attention; see
            :func:`init_local_vision` (0: HF's plain init everywhere except the position code).
        local_scale: sharpness of that initial attention (query/key scale).
    """

    image_size: int = 192
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 512
    text_hidden: int = 192
    text_layers: int = 4
    text_heads: int = 6
    text_kv_heads: int = 6
    text_intermediate: int = 512
    vocab_size: int = 1024
    max_position_embeddings: int = 2048
    tokenizer_images: int = 400
    local_layers: int = 3
    local_scale: float = 1.5

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.vision_layers < 2:
            raise ValueError("vision_layers must be >= 2 (the LLM reads the penultimate layer)")
        for width, heads, name in ((self.vision_hidden, self.vision_heads, "vision"),
                                   (self.text_hidden, self.text_heads, "text")):
            if width % heads:
                raise ValueError(f"{name}_hidden {width} must be a multiple of {name}_heads {heads}")
        if self.text_heads % self.text_kv_heads:
            raise ValueError("text_heads must be a multiple of text_kv_heads")
        if not 0 <= self.local_layers <= min(self.vision_layers, len(LOCAL_OFFSETS)):
            raise ValueError(f"local_layers must be in 0..{min(self.vision_layers, len(LOCAL_OFFSETS))}")
        if self.local_layers and (self.vision_hidden < POSITION_DIMS + 32
                                  or self.vision_hidden // self.vision_heads < POSITION_DIMS):
            raise ValueError(f"local_layers needs vision_hidden >= {POSITION_DIMS + 32} and a vision head width "
                             f">= {POSITION_DIMS}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def tokenizer_corpus(n_images: int, seed: int = 0) -> list[str]:
    """The BPE training text: the project's default corpus, SynthVQA's whole vocabulary, every answer-format
    suffix, and the prompts and answers of the first ``n_images`` train images (deterministic), so that every
    attribute, word, number and template word is one token."""
    words = [*COLOR_NAMES, *SHAPES, *SHAPE_PLURALS.values(), *SIZE_NAMES, *WORDS, *NUMBER_WORDS,
             *(str(i) for i in range(41)), "yes", "no", "Yes", "No", "A", "B", "C", "D", "E"]
    corpus = [DEFAULT_CORPUS, " ".join(words), " ".join(f'"{w}"' for w in WORDS),
              SHORT_ANSWER, LETTER_ANSWER, OCR_PREFIX, DESCRIBE, "USER: ASSISTANT:"]
    cfg = SynthVQAConfig(seed=seed)
    for i in range(n_images):
        for q in make_sample(cfg, "train", i).questions:
            corpus.append(f"{q.prompt} {q.answer}")
    return corpus


def build_processor(spec: BackboneSpec, seed: int = 0):
    """The LLaVA processor: SynthVQA BPE tokenizer, PIL CLIP image processor, LLaVA chat template."""
    tok = build_tokenizer(["<pad>", "<s>", "</s>", "<unk>", "<image>"], {"image_token": "<image>"},
                          vocab_size=spec.vocab_size, corpus=tokenizer_corpus(spec.tokenizer_images, seed))
    return llava_processor(tok, spec.image_size, spec.patch_size)


def grid_code(grid: int) -> torch.Tensor:
    """(grid * grid, 32) position codes in raster order: for each frequency w, (cos w r, sin w r, cos w c,
    sin w c). The dot product of two codes is sum_w cos(w dr) + cos(w dc): largest at the same patch."""
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for w in POSITION_FREQS:
        parts += [torch.cos(w * rows), torch.sin(w * rows), torch.cos(w * cols), torch.sin(w * cols)]
    return torch.stack([p.flatten() for p in parts], dim=1).float()


def _shift(dr: int, dc: int) -> torch.Tensor:
    """(32, 32) block rotation mapping the code of (r, c) to the code of (r + dr, c + dc)."""
    m = torch.zeros(POSITION_DIMS, POSITION_DIMS)
    for i, w in enumerate(POSITION_FREQS):
        for j, d in enumerate((dr, dc)):
            a = 4 * i + 2 * j
            c, s = math.cos(w * d), math.sin(w * d)
            m[a: a + 2, a: a + 2] = torch.tensor([[c, -s], [s, c]])
    return m


def init_local_vision(model, layers: int, scale: float = 1.0) -> None:
    """Gives the vision tower a convolution-like starting point (ConViT's idea, within HF CLIP's modules).

    Why: a ViT trained from scratch on a few thousand images learns *where* to look very slowly; with HF's
    N(0, 0.02) position embeddings it barely knows where a patch is. Measured here: after 5,000 images a plain
    tower still classified the shape under a patch at chance, although an MLP on a 5 x 5-patch silhouette
    window reaches 95 %. So:

    * the last 32 channels of the residual stream carry a grid position code (:func:`grid_code`) in the
      position embeddings, and the patch embedding starts with those channels empty (content in the others);
    * in each of the first ``layers`` encoder layers, head h's query/key projections start as a position-only
      match shifted by one offset of :data:`LOCAL_OFFSETS` (query = code of the patch at the offset, key = own
      code), so the head attends to that neighbour; values, outputs and all content terms keep HF's init.

    Everything stays trainable; only the starting point changes. CLS has a zero code (it attends everywhere).
    """
    tower = model.model.vision_tower
    width = tower.config.hidden_size
    heads = tower.config.num_attention_heads
    head_dim = width // heads
    if width < POSITION_DIMS + 32 or head_dim < POSITION_DIMS:
        raise ValueError(f"local vision init needs width >= {POSITION_DIMS + 32} and head width >= "
                         f"{POSITION_DIMS}; got {width} and {head_dim}")
    pos = slice(width - POSITION_DIMS, width)
    emb = tower.embeddings
    n = emb.position_embedding.weight.shape[0]
    grid = int(round((n - 1) ** 0.5))
    with torch.no_grad():
        emb.position_embedding.weight.zero_()
        emb.position_embedding.weight[1:, pos] = grid_code(grid)
        emb.patch_embedding.weight[pos] = 0.0
        for layer, offsets in zip(tower.encoder.layers[:layers], LOCAL_OFFSETS):
            attn = layer.self_attn
            for h, (dr, dc) in enumerate(offsets[:heads]):
                rows = slice(h * head_dim, h * head_dim + POSITION_DIMS)
                for proj, block in ((attn.q_proj, _shift(dr, dc)), (attn.k_proj, torch.eye(POSITION_DIMS))):
                    proj.weight[h * head_dim: (h + 1) * head_dim] = 0.0
                    proj.weight[rows, pos] = scale * block
                    if proj.bias is not None:
                        proj.bias[h * head_dim: (h + 1) * head_dim] = 0.0


def build_backbone(spec: BackboneSpec, seed: int = 0, processor: Any = None,
                   text_overrides: dict[str, Any] | None = None):
    """A randomly initialised SynthVQA LLaVA and its processor (deterministic in ``seed``).

    ``text_overrides`` sets further ``LlamaConfig`` fields (e.g. ``{"rope_parameters": {"rope_theta": 1e6,
    "rope_type": "default"}}``) for recipe probes (``jobs/bench_stage2_recipe.py``); the recipes leave it unset.

    Returns:
        ``(model, processor)``: a ``LlavaForConditionalGeneration`` in train mode and its ``LlavaProcessor``.
    """
    from transformers import LlavaForConditionalGeneration

    processor = processor if processor is not None else build_processor(spec, seed)
    tok = processor.tokenizer
    config = llava_config(spec, tok, max_position_embeddings=spec.max_position_embeddings,
                          text_overrides=text_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    init_local_vision(model, spec.local_layers, spec.local_scale)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model.train(), processor


def save_backbone(model, processor, folder: str | Path) -> Path:
    """``save_pretrained`` of model (safetensors) and processor into ``folder``; returns it."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def parameter_counts(model) -> dict[str, int]:
    """Parameters per part: vision tower, projector, language model (with its head), total."""
    parts = {
        "vision": model.model.vision_tower,
        "projector": model.model.multi_modal_projector,
        "language": model.model.language_model,
        "lm_head": model.lm_head,
    }
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
