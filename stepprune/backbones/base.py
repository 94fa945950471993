"""The backbone adapter: one frozen HF vision-language model behind the seams pruning methods need.

An adapter exposes, through public transformers APIs only:

* :meth:`prepare` — images + prompts (+ answers) through the model's own processor and chat template, with the
  exact instruction-token mask and answer labels;
* :meth:`vision_features` — the selected layer's visual tokens (pre-projector), CLS (LLaVA), and on request a
  vision layer's queries/keys/attention;
* :meth:`project` — the frozen projector (LLaVA) or merger (Qwen2.5-VL) into LLM space;
* :meth:`splice` — a (pruned) visual prefix into the prompt, with original or contiguous position ids;
* :meth:`forward` / :meth:`lm_loss` / :meth:`generate` — the LLM over that batch through :class:`LLMRunner`,
  with in-LLM drop hooks and decode-time eviction.

Family subclasses implement the four abstract pieces: vision features, projection, the unpruned position ids, and
where the text model lives.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from stepprune.backbones.answer_loss import LossPer, answer_spans, check_loss_per, per_question_mean
from stepprune.backbones.hooks import AttentionBias, DecodeEvict, PrefillDrop
from stepprune.backbones.llm import GenerationResult, LLMRunner, PrefillResult
from stepprune.backbones.preprocess import Preprocessor, single_turn
from stepprune.backbones.splice import PositionMode, splice
from stepprune.backbones.types import LMInputs, PromptBatch, VisionFeatures, VisualTokens


class BackboneAdapter(abc.ABC):
    """A frozen HF vision-language model (eval mode, no gradients) and its processor.

    Args:
        model: the loaded ``*ForConditionalGeneration`` model.
        processor: its processor (tokenizer + image processor + chat template).
        path: the folder it was loaded from.
    """

    family: str = ""

    def __init__(self, model: nn.Module, processor, path: str | Path):
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.path = Path(path)
        self.runner = LLMRunner(self.text_model, model.lm_head)
        self.preprocessor = Preprocessor(processor, self.image_token_id)

    # ------------------------------------------------------------------------------------ family-specific
    @property
    def text_model(self) -> nn.Module:
        """The decoder stack (``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``); both supported
        families keep it at ``model.model.language_model``."""
        return self.model.model.language_model

    @property
    def image_token_id(self) -> int:
        """The image placeholder id in ``input_ids``."""
        return self.model.config.image_token_id

    @abc.abstractmethod
    def vision_features(self, prompt: PromptBatch) -> VisionFeatures:
        """Runs the frozen vision tower on the batch's images (no grad)."""

    @abc.abstractmethod
    def project(self, tokens: Tensor) -> Tensor:
        """(B, N, d_tok) pre-projector visual tokens -> (B, N, D) LLM-space embeddings (frozen projector)."""

    @abc.abstractmethod
    def _positions(self, input_ids: Tensor, attention_mask: Tensor, extra: dict, pixel_inputs: dict) -> Tensor:
        """Position ids of the unpruned, possibly padded, sequence: (B, L0) or (3, B, L0)."""

    # ------------------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        return self.runner.num_layers

    @property
    def hidden_size(self) -> int:
        return self.text_model.config.hidden_size

    @property
    def visual_token_dim(self) -> int:
        """d_tok: the width of one row of :attr:`VisionFeatures.tokens` (known without running the tower)."""
        raise NotImplementedError(f"{type(self).__name__} does not state its visual token width")

    @property
    def visual_token_group(self) -> int:
        """How many pre-projector patch features one visual token concatenates (1; Qwen2.5-VL: 4)."""
        return 1

    @property
    def eos_token_id(self) -> int | list[int]:
        eos = self.model.generation_config.eos_token_id
        return eos if eos is not None else self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        pad = self.model.generation_config.pad_token_id
        return pad if pad is not None else self.tokenizer.pad_token_id

    # ------------------------------------------------------------------------------------------ prompts
    def format_prompt(self, text: str) -> str:
        """One user turn holding the image and ``text``, with the generation prompt, via the chat template."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prepare(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        answers: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
    ) -> PromptBatch:
        """Tokenises single-question samples with the backbone's processor and chat template.

        Args:
            images: one PIL image per sample.
            prompts: the user text per sample (the benchmark's prompt string, e.g. question + answer-format hint).
            answers: reference answers for teacher-forced training; the labels cover the answer and its EOS.
            keys: stable sample identifiers.

        Returns:
            The batch on the adapter's device; ``question_mask`` marks exactly the prompt text's tokens.
        """
        if answers is not None and len(answers) != len(prompts):
            raise ValueError(f"{len(answers)} answers but {len(prompts)} prompts")
        convs = [single_turn(p, None if answers is None else answers[i]) for i, p in enumerate(prompts)]
        return self.prepare_conversations(images, convs, keys)

    def prepare_conversations(self, images: Sequence[Image.Image], conversations: Sequence[Sequence[dict]],
                              keys: Sequence[str] | None = None) -> PromptBatch:
        """Tokenises LLaVA-Instruct conversations (multi-turn; labels on every answer when answers are present)."""
        encoded = self.preprocessor.encode(images, conversations)
        if not bool((encoded["labels"] != -100).any()):
            encoded.pop("labels")
        return self.finish(encoded, keys)

    def finish(self, encoded: dict[str, Tensor], keys: Sequence[str] | None = None) -> PromptBatch:
        """Completes a batch encoded by :class:`Preprocessor` (possibly on another process): position ids of
        the unpruned sequence, and everything moved to the adapter's device."""
        encoded = dict(encoded)
        input_ids, attention_mask = encoded.pop("input_ids"), encoded.pop("attention_mask")
        qmask, labels = encoded.pop("question_mask"), encoded.pop("labels", None)
        pixel_inputs = {k: encoded.pop(k) for k in ("pixel_values", "image_grid_thw") if k in encoded}
        positions = self._positions(input_ids, attention_mask, encoded, pixel_inputs)
        batch = PromptBatch(input_ids, attention_mask, pixel_inputs, positions, qmask, labels,
                            list(keys) if keys is not None else None, encoded)
        return batch.to(self.device)

    def embed_text(self, input_ids: Tensor) -> Tensor:
        """(B, L) ids -> (B, L, D) frozen LLM input embeddings."""
        return self.runner.embed(input_ids)

    # -------------------------------------------------------------------------------------------- LLM side
    def splice(self, prompt: PromptBatch, visual: VisualTokens, vision: VisionFeatures,
               position_mode: PositionMode = "original") -> LMInputs:
        """The LLM batch with ``visual`` in place of each sample's image tokens (see :mod:`.splice`)."""
        return splice(prompt, visual, self.embed_text(prompt.input_ids), vision.num_tokens,
                      self.image_token_id, position_mode)

    def forward(self, inputs: LMInputs, drops: Sequence[PrefillDrop] = (),
                biases: Sequence[AttentionBias] = ()) -> PrefillResult:
        """Full-sequence prefill (gradients flow to ``inputs.embeds`` and through ``biases`` when enabled)."""
        return self.runner.prefill(inputs, drops, biases=biases)

    def lm_loss(self, result: PrefillResult, per_sample: bool = False, loss_per: LossPer = "token") -> Tensor:
        """Mean next-token NLL over labelled slots of a prefill result, computing logits only where needed.

        Returns a scalar (the mean over every labelled token of the batch), or with ``per_sample`` a (B,) tensor:
        each sample's mean over its own labelled tokens (every sample must have some). ``loss_per="question"``
        averages within each answer first, then over the answers (see :mod:`.answer_loss`).
        """
        check_loss_per(loss_per)
        labels = result.state.labels
        if labels is None:
            raise ValueError("the batch has no labels (prepare it with answers)")
        target = labels[:, 1:]
        where = target != -100
        if not bool(where.any()):
            raise ValueError("no labelled tokens in the batch")
        logits = self.runner.logits(result.hidden[:, :-1][where]).float()
        if loss_per == "question":
            nll = nn.functional.cross_entropy(logits, target[where], reduction="none")
            return per_question_mean(nll, where, answer_spans(where), per_sample=per_sample)
        if not per_sample:
            return nn.functional.cross_entropy(logits, target[where])
        counts = where.sum(dim=1)
        if bool((counts == 0).any()):
            raise ValueError("a sample of the batch has no labelled tokens")
        nll = nn.functional.cross_entropy(logits, target[where], reduction="none")
        rows = torch.arange(target.shape[0], device=nll.device)[:, None].expand_as(target)[where]
        return torch.zeros(target.shape[0], device=nll.device).index_add_(0, rows, nll) / counts

    @torch.no_grad()
    def generate(
        self,
        inputs: LMInputs,
        max_new_tokens: int = 16,
        drops: Sequence[PrefillDrop] = (),
        evicts: Sequence[DecodeEvict] = (),
    ) -> GenerationResult:
        """Greedy decoding with a KV cache over the (pruned) batch."""
        return self.runner.generate(inputs, max_new_tokens, self.eos_token_id, self.pad_token_id, drops, evicts)

    def decode(self, tokens: Tensor) -> list[str]:
        """Generated ids (B, T) -> stripped strings (special tokens removed)."""
        return [t.strip() for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    def keep_all(self, vision: VisionFeatures) -> VisualTokens:
        """Every visual token, projected, in raster order (the unpruned visual prefix)."""
        projected = self.project(vision.tokens)
        n = projected.shape[1]
        index = torch.arange(n, device=projected.device)[None].expand(projected.shape[0], -1)
        return VisualTokens(projected, index, vision.num_tokens.clone())
