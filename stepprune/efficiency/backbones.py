"""Backbones at their real size without their weights: the public LLaVA-1.5-7B and Qwen2.5-VL-7B configs, built
as Hugging Face models on the **meta** device (FLOP counting: shapes only, nothing allocated) or with **random
weights** on any device (latency), each wrapped in its family's adapter with a processor built offline.

Config values (the public ``config.json`` files):

* ``llava15_7b`` — ``llava-hf/llava-1.5-7b-hf``: CLIP ViT-L/14-336 (hidden 1024, 24 layers, 16 heads, MLP 4096,
  quick-GELU, image 336, patch 14 -> 576 patches + CLS), projector 1024 -> 4096 -> 4096 (GELU), Vicuna-7B (hidden
  4096, 32 layers, 32 heads, MHA, MLP 11008, RMSNorm eps 1e-5, RoPE theta 1e4). Vocabulary 32064: Vicuna's 32000
  plus the tokens llava-hf added (``<image>`` = 32000, padding); it only changes the one-row LM head by 0.2 %.
* ``qwen2_5_vl_7b`` — ``Qwen/Qwen2.5-VL-7B-Instruct``: windowed ViT (hidden 1280, 32 blocks, 16 heads, MLP 3420,
  SiLU, patch 14, temporal patch 2, window 112, full attention in blocks 7/15/23/31, 2x2 merger to 3584), Qwen2
  LLM (hidden 3584, 28 layers, 28 query / 4 KV heads, MLP 18944, vocabulary 152064, M-RoPE sections 16/24/24,
  theta 1e6).

The processor (tokenizer, image processor, chat template) is the tiny backbones' offline BPE tokenizer with the
family's image processor at the real resolution: no download, and the model's special-token ids are set to the
tokenizer's (a few hundred ids, all inside the real vocabulary). Random weights make answers meaningless; shapes,
FLOPs and timings are the real ones, except that prompts tokenise to other lengths than with the real tokenizer.

Example::

    adapter = build_adapter(real_config("llava15_7b"), device="meta")        # FLOPs
    adapter = build_adapter(real_config("llava15_7b"), device="cuda", dtype=torch.bfloat16)   # latency
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PretrainedConfig

from stepprune.backbones import ADAPTERS, BackboneAdapter
from stepprune.backbones.tiny import LLAVA_CHAT_TEMPLATE, QWEN_CHAT_TEMPLATE, build_tokenizer


def llava15_7b_config() -> PretrainedConfig:
    """The ``LlavaConfig`` of LLaVA-1.5-7B (llava-hf layout)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000, image_seq_length=576,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", tie_word_embeddings=False)


def qwen2_5_vl_7b_config() -> PretrainedConfig:
    """The ``Qwen2_5_VLConfig`` of Qwen2.5-VL-7B-Instruct."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                         rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", in_channels=3,
                           tokens_per_second=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


REAL_CONFIGS = {"llava15_7b": llava15_7b_config, "qwen2_5_vl_7b": qwen2_5_vl_7b_config}


def real_config(spec: str) -> PretrainedConfig:
    """A named real config (:data:`REAL_CONFIGS`), or the ``config.json`` of a backbone folder (no weights read).

    Raises:
        ValueError: neither a known name nor a folder with a config.json.
    """
    if spec in REAL_CONFIGS:
        return REAL_CONFIGS[spec]()
    folder = Path(spec)
    if (folder / "config.json").is_file():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(folder)
    raise ValueError(f"backbone {spec!r}: not one of {sorted(REAL_CONFIGS)} and not a folder with a config.json")


def family_of(config: PretrainedConfig) -> str:
    """The adapter family (``"llava"`` or ``"qwen2_5_vl"``) of a config."""
    if config.model_type not in ADAPTERS:
        raise ValueError(f"model_type {config.model_type!r} has no adapter; supported: {sorted(ADAPTERS)}")
    return config.model_type


def default_image_size(config: PretrainedConfig) -> int:
    """LLaVA: the CLIP resolution. Qwen2.5-VL: 672 px, i.e. 24 x 24 = 576 merged tokens (LLaVA-1.5's count)."""
    if family_of(config) == "llava":
        return int(config.vision_config.image_size)
    return 2 * 12 * int(config.vision_config.patch_size) * int(config.vision_config.spatial_merge_size)


def offline_processor(config: PretrainedConfig, image_size: int | None = None):
    """A processor for ``config`` built offline, and the config updated with the tokenizer's special ids.

    Args:
        image_size: Qwen2.5-VL's input resolution (LLaVA's is its CLIP config's).

    Returns:
        ``(processor, config)`` (the same config object, its token ids set in place).
    """
    family = family_of(config)
    size = default_image_size(config) if family == "llava" else image_size or default_image_size(config)
    if family == "llava":
        from transformers import LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        tok = build_tokenizer(["<pad>", "<s>", "</s>", "<unk>", "<image>"], {"image_token": "<image>"})
        image = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor = LlavaProcessor(image_processor=image, tokenizer=tok, patch_size=config.vision_config.patch_size,
                                   vision_feature_select_strategy=config.vision_feature_select_strategy,
                                   num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
        config.image_token_id = tok.convert_tokens_to_ids("<image>")
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(config.text_config, key, getattr(tok, key))
        return processor, config
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from stepprune.backbones.qwen_processor import Qwen25VLImageOnlyProcessor

    names = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
             "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}
    tok = build_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                           "<|image_pad|>", "<|video_pad|>"], names, eos="<|im_end|>", pad="<|endoftext|>",
                          add_bos=False)
    vc = config.vision_config
    unit = vc.patch_size * vc.spatial_merge_size
    # min/max pixels bracket exactly this resolution, so a size x size image keeps it.
    image = Qwen2VLImageProcessorPil(size={"shortest_edge": unit * unit, "longest_edge": size * size},
                                     patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size,
                                     merge_size=vc.spatial_merge_size)
    processor = Qwen25VLImageOnlyProcessor(image_processor=image, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in names.items()}
    config.image_token_id, config.video_token_id = ids["image_token"], ids["video_token"]
    config.vision_start_token_id, config.vision_end_token_id = ids["vision_bos_token"], ids["vision_eos_token"]
    config.text_config.eos_token_id, config.text_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    config.text_config.bos_token_id = tok.pad_token_id
    return processor, config


def build_adapter(config: PretrainedConfig, *, device: str | torch.device = "meta", dtype: torch.dtype | None = None,
                  image_size: int | None = None, attn_implementation: str = "sdpa", seed: int = 0) -> BackboneAdapter:
    """The family's adapter over a model built from ``config``: on ``"meta"`` (no storage, for FLOP counting) or
    with random weights (HF init, seeded) on ``device`` in ``dtype`` (default float32).

    Args:
        config: e.g. :func:`real_config` (modified in place: special-token ids, attention implementation).
        image_size: the processor's resolution (Qwen2.5-VL only; default :func:`default_image_size`).
    """
    from transformers import LlavaForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

    processor, config = offline_processor(config, image_size)
    config._attn_implementation = attn_implementation
    classes = {"llava": LlavaForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}
    cls = classes[config.model_type]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)  # build directly in the target dtype (7B: no fp32 copy)
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            model = cls(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    name = json.dumps({"model_type": config.model_type, "weights": "meta" if str(device) == "meta" else "random"})
    return ADAPTERS[config.model_type](model, processor, f"<{name}>")
