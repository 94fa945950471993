"""Model-free prompt encoding: images + (multi-turn) conversations -> token ids, pixels, instruction mask, labels.

This is the half of prompt preparation that needs only the backbone's *processor* (tokenizer, image processor,
chat template), so it can run on CPU data workers (Ray Data ``map_batches``) while the model lives on the training
workers. The adapter finishes a batch by computing position ids (which for Qwen2.5-VL need the model's M-RoPE rule).

Conversations use the LLaVA-Instruct form: ``[{"from": "human", "value": "<image>\\nQ1"}, {"from": "gpt", "value":
"A1"}, {"from": "human", "value": "Q2"}, ...]``. The image goes into the turn that carries ``<image>`` (the first
human turn when none does). The instruction mask marks the human turns' text (never the template, the image or an
answer); labels cover each assistant answer up to and including its EOS token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_MARKER = "<image>"
ENCODED_KEYS = ("input_ids", "attention_mask", "question_mask", "labels", "pixel_values", "image_grid_thw",
                "mm_token_type_ids")


def load_processor(path: str | Path, trust_remote_code: bool = False):
    """The processor saved in a backbone folder, for the family named by its ``config.json``."""
    folder = Path(path)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type == "qwen2_5_vl":
        from stepprune.backbones.qwen_processor import Qwen25VLImageOnlyProcessor

        return Qwen25VLImageOnlyProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)


def _messages(turns: Sequence[dict]) -> list[dict]:
    """LLaVA-Instruct turns -> chat-template messages with the image in the turn that names it."""
    if not turns or turns[0].get("from") != "human":
        raise ValueError("a conversation must start with a human turn")
    image_turn = next((i for i, t in enumerate(turns) if IMAGE_MARKER in t.get("value", "")), 0)
    messages = []
    for i, t in enumerate(turns):
        role = {"human": "user", "gpt": "assistant"}.get(t.get("from"))
        if role is None:
            raise ValueError(f"turn {i}: 'from' must be 'human' or 'gpt', got {t.get('from')!r}")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"turn {i}: expected a {expected} turn (turns must alternate human/gpt)")
        text = t.get("value")
        if not isinstance(text, str):
            raise ValueError(f"turn {i}: 'value' must be a string")
        text = text.replace(IMAGE_MARKER + "\n", "").replace("\n" + IMAGE_MARKER, "").replace(IMAGE_MARKER, "")
        content = [{"type": "text", "text": text.strip()}]
        if i == image_turn:
            content = [{"type": "image"}, *content]
        messages.append({"role": role, "content": content})
    return messages


def single_turn(prompt: str, answer: str | None = None) -> list[dict]:
    """A one-question conversation (with its answer when training)."""
    turns = [{"from": "human", "value": f"{IMAGE_MARKER}\n{prompt}"}]
    if answer is not None:
        turns.append({"from": "gpt", "value": answer})
    return turns


class Preprocessor:
    """Encodes samples with one backbone's processor. Picklable, so it can be shipped to data workers.

    Args:
        processor: the backbone's processor.
        image_token_id: the placeholder id after expansion.
    """

    def __init__(self, processor, image_token_id: int):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = image_token_id
        self.image_token = processor.image_token
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos)

    @classmethod
    def from_pretrained(cls, path: str | Path, trust_remote_code: bool = False) -> Preprocessor:
        proc = load_processor(path, trust_remote_code)
        return cls(proc, proc.tokenizer.convert_tokens_to_ids(proc.image_token))

    def _template(self, messages: list[dict], generation: bool) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False)

    def _spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
        """The templated text and the character spans of every human text and every assistant answer.

        Spans come from rendering growing prefixes of the conversation, so they follow whatever the chat template
        puts around the turns. Answer spans run to the end of their turn (EOS and template tail included).
        """
        questions, answers = [], []
        prev_end = 0
        for i, m in enumerate(messages):
            if m["role"] == "user":
                head = self._template(messages[: i + 1], generation=True)
                text = next(c["text"] for c in m["content"] if c["type"] == "text")
                at = head.find(text, prev_end) if text else -1
                if text and at < 0:
                    raise ValueError(f"turn {i}: its text is not found verbatim in the chat-templated prompt")
                if text:
                    questions.append((at, at + len(text)))
                prev_end = len(head)
            else:
                full = self._template(messages[: i + 1], generation=False)
                if not full.startswith(self._template(messages[:i], generation=True)):
                    raise ValueError("the chat template's conversation does not extend its prompt")
                answers.append((prev_end, len(full)))
                prev_end = len(full)
        last_gen = messages[-1]["role"] == "user"
        text = self._template(messages, generation=last_gen)
        return text, questions, answers

    def encode_one(self, image: Image.Image, turns: Sequence[dict]) -> dict[str, np.ndarray]:
        """Encodes one sample, unpadded: ids, masks, labels (-100 outside answers) and pixel arrays."""
        messages = _messages(turns)
        text, questions, answers = self._spans(messages)
        enc = self.processor(images=[image], text=[text], return_tensors="np", return_offsets_mapping=True)
        ids = enc["input_ids"][0]
        offsets = enc["offset_mapping"][0]
        n_img = int((ids == self.image_token_id).sum())
        img_at = text.find(self.image_token)
        shift = (n_img - 1) * len(self.image_token)

        def expanded(c: int) -> int:  # offsets refer to the text after the placeholder was repeated n_img times
            return c + shift if img_at >= 0 and c > img_at else c

        st, en = offsets[:, 0], offsets[:, 1]
        real = en > st
        qmask = np.zeros(len(ids), dtype=bool)
        for a, b in questions:  # overlap, not containment: a word's leading space may come from the template
            qmask |= real & (en > expanded(a)) & (st < expanded(b))
        qmask &= ids != self.image_token_id
        labels = np.full(len(ids), -100, dtype=np.int64)
        for a, b in answers:
            inside = np.nonzero(real & (st >= expanded(a)) & (st < expanded(b)))[0]
            for i in inside:
                labels[i] = ids[i]
                if int(ids[i]) in self.eos_ids:
                    break
        out = {
            "input_ids": ids.astype(np.int64),
            "attention_mask": np.ones(len(ids), dtype=np.int64),
            "question_mask": qmask,
            "labels": labels,
            "pixel_values": enc["pixel_values"][0] if "image_grid_thw" not in enc else enc["pixel_values"],
        }
        if "image_grid_thw" in enc:
            out["image_grid_thw"] = enc["image_grid_thw"][0].astype(np.int64)
        if "mm_token_type_ids" in enc:
            out["mm_token_type_ids"] = enc["mm_token_type_ids"][0].astype(np.int64)
        return out

    def encode(self, images: Sequence[Image.Image], conversations: Sequence[Sequence[dict]],
               with_labels: bool = True) -> dict[str, Tensor]:
        """Encodes and left-pads a batch (see :func:`collate`)."""
        if len(images) != len(conversations):
            raise ValueError(f"{len(images)} images but {len(conversations)} prompts")
        rows = [self.encode_one(im, conv) for im, conv in zip(images, conversations)]
        batch = collate(rows, self.tokenizer.pad_token_id)
        if not with_labels:
            batch.pop("labels")
        return batch


def collate(rows: Sequence[dict[str, np.ndarray]], pad_token_id: int) -> dict[str, Tensor]:
    """Left-pads encoded rows into a batch: (B, L) token tensors; LLaVA pixels stacked (B, 3, H, W); Qwen pixel
    patches concatenated (sum of patches, dim) with ``image_grid_thw`` (B, 3), as the HF processors return them."""
    L = max(len(r["input_ids"]) for r in rows)
    B = len(rows)
    fills = {"input_ids": pad_token_id, "attention_mask": 0, "question_mask": False, "labels": -100,
             "mm_token_type_ids": 0}
    out: dict[str, Tensor] = {}
    for key, fill in fills.items():
        if key not in rows[0]:
            continue
        dtype = torch.bool if key == "question_mask" else torch.long
        t = torch.full((B, L), fill, dtype=dtype)
        for b, r in enumerate(rows):
            v = torch.as_tensor(np.asarray(r[key]))
            t[b, L - len(v):] = v.to(dtype)
        out[key] = t
    if "image_grid_thw" in rows[0]:
        out["pixel_values"] = torch.cat([torch.as_tensor(np.asarray(r["pixel_values"])) for r in rows])
        out["image_grid_thw"] = torch.stack([torch.as_tensor(np.asarray(r["image_grid_thw"])) for r in rows])
    else:
        out["pixel_values"] = torch.stack([torch.as_tensor(np.asarray(r["pixel_values"])) for r in rows])
    return out
