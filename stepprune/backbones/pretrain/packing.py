"""Multi-QA packing: all of an image's questions in one LLM sequence that shares the image prefix once.

The sequence is the image prefix (``<s> USER: <image> x 576``) followed by one segment per question, each the
rest of that question's own single-turn chat-templated text (``\\n{prompt} ASSISTANT: {answer}</s>``). A
block mask lets every segment attend to the prefix and to itself only, and each segment's position ids restart
right after the prefix. So every question is seen exactly as evaluation asks it (alone, after the image, at the
same positions), the image costs one pass for 8 answers (the feasibility note's dense-supervision lesson), and
the two halves of a yes/no pair cannot leak each other's answer.

Token ids come from the backbone's own chat template and tokenizer, split at the image placeholder and at the
end of the generation prompt; both are pre-token boundaries for the byte-level BPE, so the pieces concatenate
to exactly the ids :meth:`stepprune.backbones.preprocess.Preprocessor.encode_one` gives (tested).

Shapes: B images, L packed slots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from stepprune.backbones.preprocess import IMAGE_MARKER
from stepprune.backbones.pretrain.words import named_word_ids

PAD_SEGMENT = -1


@dataclasses.dataclass
class PackedQA:
    """One image's questions as one sequence.

    Attributes:
        input_ids: (L,) ids, the image placeholder expanded.
        labels: (L,) the answer tokens (and their EOS) at their own slots, -100 elsewhere.
        positions: (L,) position ids: 0..P-1 on the prefix, P.. again in every segment.
        segment: (L,) 0 on the prefix, k + 1 on question k.
        families: the question family of each segment.
        evidence: per segment, the question's evidence patches (indices into the 576 visual tokens).
        referent_evidence: per segment, each referent's own evidence patches, in the order the question names
            its referents (relation: the shape asked about, then the one it is compared with).
        query_words: (L,) True where a question's first line names a colour, shape, size or rendered word
            (:func:`~.words.named_word_ids`): what the question asks about, as opposed to its options, its
            OCR hint lines and the answer instruction.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    segment: np.ndarray
    families: list[str]
    evidence: list[list[int]] = dataclasses.field(default_factory=list)
    referent_evidence: list[list[list[int]]] = dataclasses.field(default_factory=list)
    query_words: np.ndarray | None = None


class QAPacker:
    """Packs questions with one backbone's processor (chat template, tokenizer, image-token count).

    Args:
        processor: the LLaVA processor.
        num_image_tokens: image placeholders per image (576).
    """

    def __init__(self, processor, num_image_tokens: int):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
        head = self._template("x", None)
        cut = head.index(IMAGE_MARKER) + len(IMAGE_MARKER)
        self._head_text = head[:cut]
        # The processor expands the placeholder before tokenising; so do we.
        expanded = self._head_text.replace(IMAGE_MARKER, IMAGE_MARKER * num_image_tokens)
        self.prefix = np.asarray(self.tokenizer(expanded, add_special_tokens=True)["input_ids"], dtype=np.int64)
        if int((self.prefix == self.image_token_id).sum()) != num_image_tokens:
            raise ValueError("the templated prefix does not hold the expected number of image tokens")
        self.named_ids = named_word_ids(self.tokenizer)
        # every token whose text holds a line break ("\n", "?\n", ...): where the question's first line ends
        self.newline_ids = frozenset(i for tok, i in self.tokenizer.get_vocab().items()
                                     if "\n" in self.tokenizer.convert_tokens_to_string([tok]))

    def query_words(self, prompt_ids: list[int]) -> np.ndarray:
        """(len(prompt_ids),) bool: the named words of the prompt's first non-empty line (the question)."""
        out = np.zeros(len(prompt_ids), dtype=bool)
        started = False
        for i, t in enumerate(prompt_ids):
            if t in self.newline_ids:
                if started:
                    break
                continue
            started = True
            out[i] = t in self.named_ids
        return out

    def _template(self, prompt: str, answer: str | None) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        if answer is None:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)

    def segment_ids(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """The ids after the image prefix of one single-turn sample: (prompt part, answer part incl. EOS)."""
        asked, full = self._template(prompt, None), self._template(prompt, answer)
        if not asked.startswith(self._head_text) or not full.startswith(asked):
            raise ValueError("the chat template does not extend the image prefix / generation prompt")
        enc = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        return enc(asked[len(self._head_text):]), enc(full[len(asked):])

    def pack(self, qas: Sequence[tuple]) -> PackedQA:
        """Packs ``(prompt, answer, family[, evidence[, referent_evidence]])`` tuples of one image (module
        docstring)."""
        P = len(self.prefix)
        ids, labels, pos, seg = [self.prefix], [np.full(P, -100)], [np.arange(P)], [np.zeros(P, dtype=np.int64)]
        words = [np.zeros(P, dtype=bool)]
        for k, (prompt, answer, *_) in enumerate(qas):
            q, a = self.segment_ids(prompt, answer)
            n = len(q) + len(a)
            words.append(np.concatenate([self.query_words(q), np.zeros(len(a), dtype=bool)]))
            ids.append(np.asarray(q + a, dtype=np.int64))
            labels.append(np.asarray([-100] * len(q) + a, dtype=np.int64))
            pos.append(P + np.arange(n))
            seg.append(np.full(n, k + 1, dtype=np.int64))
        return PackedQA(np.concatenate(ids), np.concatenate(labels), np.concatenate(pos).astype(np.int64),
                        np.concatenate(seg), [q[2] for q in qas], [list(q[3]) if len(q) > 3 else [] for q in qas],
                        [[list(r) for r in q[4]] if len(q) > 4 else [] for q in qas], np.concatenate(words))


def collate_packed(rows: Sequence[PackedQA], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pads packed rows into (B, L) ``input_ids``, ``labels``, ``positions``, ``segment`` (-1 = pad) and
    ``query_words`` (bool)."""
    L = max(len(r.input_ids) for r in rows)
    B = len(rows)
    out = {
        "input_ids": torch.full((B, L), pad_token_id, dtype=torch.long),
        "labels": torch.full((B, L), -100, dtype=torch.long),
        "positions": torch.zeros((B, L), dtype=torch.long),
        "segment": torch.full((B, L), PAD_SEGMENT, dtype=torch.long),
        "query_words": torch.zeros((B, L), dtype=torch.bool),
    }
    for b, r in enumerate(rows):
        n = len(r.input_ids)
        out["input_ids"][b, :n] = torch.from_numpy(r.input_ids)
        out["labels"][b, :n] = torch.from_numpy(r.labels)
        out["positions"][b, :n] = torch.from_numpy(r.positions)
        out["segment"][b, :n] = torch.from_numpy(r.segment)
        if r.query_words is not None:
            out["query_words"][b, :n] = torch.from_numpy(r.query_words)
    return out


def segment_mask(segment: Tensor) -> Tensor:
    """(B, L) segment ids -> (B, 1, L, L) bool attention mask (True = may attend).

    Slot i attends to slot j <= i when j is on the prefix or in i's own segment; padding neither attends nor is
    attended to, except that every slot attends to itself so that no row is all-masked (NaNs would leak
    through 0 * NaN).
    """
    L = segment.shape[1]
    idx = torch.arange(L, device=segment.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L)
    same = (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None])  # (B, L, L)
    real = segment != PAD_SEGMENT
    allowed = causal[None] & same & real[:, None, :] & real[:, :, None]
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=segment.device)[None]
    return allowed[:, None]
