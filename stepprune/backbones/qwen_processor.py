"""An image-only Qwen2.5-VL processor.

The stock ``Qwen2_5_VLProcessor`` type-checks a video-processor slot whose classes need torchvision, and this
project does not install torchvision (its PyPI wheel is CUDA-only and breaks transformers' image processors on
CPU machines). Images are all a pruning harness needs, so this subclass skips the video slot and otherwise
behaves exactly like the stock processor: same prompt expansion of ``<|image_pad|>``, same ``mm_token_type_ids``,
same saved files.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin


class Qwen25VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without its video processor. Loads and saves with ``(save|from)_pretrained``."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
