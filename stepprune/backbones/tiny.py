"""Tiny backbones built offline: both supported architectures from small configs, with a real tokenizer and
processor, saved with ``save_pretrained`` so that every test exercises the same ``from_pretrained(local_dir)``
loading path that a real 7B checkpoint goes through. Nothing here downloads anything.

The LLaVA-shaped default turns a 96x96 image into 24x24 = 576 patch tokens (patch size 4), exactly the visual
sequence length of LLaVA-1.5 at 336 px, so budgets 192/128/64 mean the same thing as in the paper. The Qwen-shaped
default turns a 96x96 image into 24x24 patches and 12x12 = 144 merged tokens, like Qwen2.5-VL at 336 px.

Example::

    from stepprune.backbones.tiny import build_tiny_llava
    path = build_tiny_llava("/tmp/tiny-llava")          # config, weights, tokenizer, processor
    adapter = stepprune.load_backbone(path)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from stepprune.backbones.qwen_processor import Qwen25VLImageOnlyProcessor

# A small, fixed English corpus for the byte-level BPE: enough merges that common words are one or two tokens.
# Byte-level BPE can encode any string, so an out-of-corpus word costs more tokens, never an error.
DEFAULT_CORPUS = (
    "USER ASSISTANT Answer the question using a single word or phrase. "
    "Answer with the option's letter from the given choices directly. Reference OCR token: "
    "Is there a red circle in the image? yes no What color is the square? How many objects are there? "
    "Which shape is left of the blue triangle? What does the text say? Describe the image in detail. "
    "red green blue yellow purple orange white black gray brown pink cyan circle square triangle star "
    "cross diamond heart small medium large big left right above below top bottom middle next to near "
    "zero one two three four five six seven eight nine ten A B C D E 0 1 2 3 4 5 6 7 8 9 "
    "the a an of in on is are there what which how many color shape size text word letter option choices "
    "Context: Hint: Options: The answer is picture scene object objects background contains shows"
)

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclasses.dataclass
class TinyLlavaSpec:
    """Sizes of a tiny ``LlavaForConditionalGeneration``. Defaults: 96 px, patch 4, 576 patch tokens."""

    image_size: int = 96
    patch_size: int = 4
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 64
    text_hidden: int = 32
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 64
    vocab_size: int = 400
    vision_feature_layer: int = -2
    tie_word_embeddings: bool = False


@dataclasses.dataclass
class TinyQwenSpec:
    """Sizes of a tiny ``Qwen2_5_VLForConditionalGeneration``. Defaults: 96 px, patch 4, 144 merged tokens."""

    image_size: int = 96
    patch_size: int = 4
    vision_hidden: int = 32
    vision_depth: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 64
    window_size: int = 32  # 4x4 merged tokens per window at patch 4 / merge 2
    text_hidden: int = 32
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 64
    vocab_size: int = 400
    mrope_section: tuple[int, int, int] = (2, 1, 1)  # sums to head_dim / 2 = 4


def build_tokenizer(
    specials: list[str],
    named_specials: dict[str, str],
    *,
    vocab_size: int = 400,
    corpus: Iterable[str] | None = None,
    bos: str = "<s>",
    eos: str = "</s>",
    pad: str = "<pad>",
    add_bos: bool = True,
):
    """Trains a deterministic byte-level BPE tokenizer offline and wraps it as a transformers fast tokenizer.

    Args:
        specials: special tokens, in id order (ids 0..len-1).
        named_specials: extra named special tokens (e.g. ``{"image_token": "<image>"}``) that become attributes.
        vocab_size: target vocabulary size (the merges stop early on a small corpus).
        corpus: training text; the built-in English corpus when None.
        add_bos: prepend ``bos`` to every encoded sequence (LLaMA convention; Qwen does not).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = list(corpus) if corpus is not None else [DEFAULT_CORPUS]
    tok.train_from_iterator(text, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos if add_bos else None,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=named_specials,
        padding_side="left",
    )


def llava_config(spec: Any, tok: Any, *, vision_feature_layer: int = -2, tie_word_embeddings: bool = False,
                 max_position_embeddings: int = 2048, text_overrides: dict[str, Any] | None = None):
    """The ``LlavaConfig`` of a LLaVA-1.5-shaped model (CLIP vision tower, LLaMA text model, one image of
    ``(image_size / patch_size)^2`` patch tokens, CLS dropped) sized by ``spec``.

    Args:
        spec: any object with ``image_size``, ``patch_size``, ``vision_{hidden,intermediate,layers,heads}`` and
            ``text_{hidden,intermediate,layers,heads,kv_heads}`` (:class:`TinyLlavaSpec`, the pretraining spec).
        tok: the tokenizer (vocabulary size, special token ids, ``<image>``).
        text_overrides: further ``LlamaConfig`` fields (e.g. ``rope_parameters``), over the defaults.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
        **(text_overrides or {}),
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(spec.image_size // spec.patch_size) ** 2,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=tie_word_embeddings,
    )


def llava_processor(tok: Any, image_size: int, patch_size: int):
    """The ``LlavaProcessor``: PIL CLIP image processor at ``image_size``, ``tok``, the LLaVA chat template."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def build_tiny_llava(
    out_dir: str | Path,
    spec: TinyLlavaSpec | None = None,
    *,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Builds, saves and returns the folder of a tiny random LLaVA-1.5-architecture model with its processor.

    The folder holds ``config.json``, ``model.safetensors``, the tokenizer and ``processor_config.json``; it loads
    with ``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained``.
    """
    from transformers import LlavaForConditionalGeneration

    spec = spec or TinyLlavaSpec()
    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(
        ["<pad>", "<s>", "</s>", "<unk>", "<image>"],
        {"image_token": "<image>"},
        vocab_size=spec.vocab_size,
        corpus=corpus,
    )
    config = llava_config(spec, tok, vision_feature_layer=spec.vision_feature_layer,
                          tie_word_embeddings=spec.tie_word_embeddings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    processor = llava_processor(tok, spec.image_size, spec.patch_size)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_card(out, "llava", dataclasses.asdict(spec), seed)
    return out


def build_tiny_qwen2_5_vl(
    out_dir: str | Path,
    spec: TinyQwenSpec | None = None,
    *,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Builds, saves and returns the folder of a tiny random Qwen2.5-VL-architecture model with its processor.

    The processor is saved in the standard layout; load it with ``Qwen25VLImageOnlyProcessor.from_pretrained``
    (the stock processor needs torchvision for its video half, which this project does not install).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    spec = spec or TinyQwenSpec()
    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok = build_tokenizer(
        specials,
        {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
        vocab_size=spec.vocab_size,
        corpus=corpus,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        add_bos=False,
    )
    head_dim = spec.text_hidden // spec.text_heads
    if sum(spec.mrope_section) != head_dim // 2:
        raise ValueError(f"mrope_section {spec.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=spec.text_hidden,
            intermediate_size=spec.text_intermediate,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.text_heads,
            num_key_value_heads=spec.text_kv_heads,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": list(spec.mrope_section)},
            bos_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.text_hidden,
            patch_size=spec.patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=spec.window_size,
            fullatt_block_indexes=[spec.vision_depth - 1],
        ),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    pixels = spec.image_size * spec.image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 4 * (spec.patch_size * 2) ** 2, "longest_edge": 4 * pixels},
        patch_size=spec.patch_size,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor = Qwen25VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tok,
                                           chat_template=QWEN_CHAT_TEMPLATE)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_card(out, "qwen2_5_vl", dataclasses.asdict(spec), seed)
    return out


def _write_card(out: Path, family: str, spec: dict, seed: int) -> None:
    """Records how a tiny backbone was made, next to its weights."""
    card = {"family": family, "spec": spec, "seed": seed, "weights": "random (not trained)",
            "built_by": "stepprune.backbones.tiny"}
    (out / "tiny_backbone.json").write_text(json.dumps(card, indent=2) + "\n")
