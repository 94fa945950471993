"""``PrunedVLM``: a frozen backbone adapter composed with one pruning method — the single path every harness
(evaluation, efficiency, training, notebooks) runs a method through.

Example::

    import stepprune
    adapter = stepprune.load_backbone("path/to/llava-1.5-7b-hf")
    vlm = stepprune.PrunedVLM(adapter, stepprune.build_method("random", budget=64))
    batch = adapter.prepare(images, [q + "\\nAnswer the question using a single word or phrase." for q in qs])
    out = vlm.generate(batch, max_new_tokens=16)
    out.texts, out.kept            # answers; visual tokens kept per sample
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from stepprune.backbones.answer_loss import LossPer, check_loss_per
from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.types import LMInputs, PromptBatch, VisionFeatures, VisualTokens
from stepprune.methods.base import PruningMethod, SelectionContext, TrainOutput


@dataclasses.dataclass
class PrunedGeneration:
    """Result of :meth:`PrunedVLM.generate`.

    Attributes:
        texts: decoded answers (stripped).
        tokens: (B, T) generated ids.
        kept: (B,) visual tokens handed to the LLM (after pre-LLM selection).
        kept_index: per sample, the original visual indices handed to the LLM (source indices for merged tokens).
        final_index: per sample, the original visual indices that reach the last LLM layer (after in-LLM drops)
            and remain cached at the end of generation (after decode-time eviction).
        visual_per_layer: (B, num_layers) visual tokens that actually enter each LLM layer at prefill.
        cached_visual_per_layer: (B, num_layers) visual KV entries left in each layer at the end of generation.
    """

    texts: list[str]
    tokens: Tensor
    kept: Tensor
    kept_index: list[list[int]]
    final_index: list[list[int]]
    visual_per_layer: Tensor
    cached_visual_per_layer: Tensor


@dataclasses.dataclass
class TrainStep:
    """One training forward pass of a trainable method.

    Attributes:
        loss: L_LM + the method's own terms (what is back-propagated).
        lm_loss: the answer-token NLL (detached).
        aux_loss: the method's own terms (detached).
        metrics: the method's diagnostics.
    """

    loss: Tensor
    lm_loss: Tensor
    aux_loss: Tensor
    metrics: dict


class PrunedVLM(nn.Module):
    """A frozen backbone plus one method. Only the method's parameters are trainable: the backbone is held as a
    plain attribute, not a submodule, so optimisers and DeepSpeed/DDP wrappers see only the method.

    ``loss_per`` is how the training path averages the answer NLL: ``"token"`` over every answer token of the batch
    (LLaVA's convention), ``"question"`` per answer first (:mod:`stepprune.backbones.answer_loss`)."""

    def __init__(self, adapter: BackboneAdapter, method: PruningMethod, loss_per: LossPer = "token"):
        super().__init__()
        check_loss_per(loss_per)
        self.adapter = adapter
        self.method = method.to(adapter.device)
        self.loss_per = loss_per

    def forward(self, prompt: PromptBatch, step: int) -> TrainStep:
        """The training path: the method's differentiable visual tokens through the frozen LLM (with the
        method's attention-bias hooks, if any), answer-token NLL plus the method's own loss terms. Gradients
        reach only the method's parameters."""
        inputs, out = self.train_inputs(prompt, step)
        lm = self.adapter.lm_loss(self.adapter.forward(inputs, biases=out.biases), loss_per=self.loss_per)
        aux, metrics = out.aux_loss, out.metrics
        if out.finish is not None:
            extra, more = out.finish()
            aux, metrics = aux + extra, {**metrics, **more}
        return TrainStep(lm + aux, lm.detach(), aux.detach(), metrics)

    def train_inputs(self, prompt: PromptBatch, step: int) -> tuple[LMInputs, TrainOutput]:
        """The training path up to the LLM: the method's differentiable visual tokens spliced at their original
        positions, and the method's output (attention biases, aux loss, metrics)."""
        ctx = self.context(prompt)
        out = self.method.train_forward(ctx, step)
        return self.adapter.splice(prompt, out.visual, ctx.vision, "original"), out

    def context(self, prompt: PromptBatch, vision: VisionFeatures | None = None) -> SelectionContext:
        """Runs the vision tower (unless ``vision``, this prompt's features, is given) and wraps what methods may
        look at."""
        if vision is None:
            vision = self.adapter.vision_features(prompt)
        return SelectionContext(self.adapter, prompt, vision)

    def llm_inputs(self, ctx: SelectionContext) -> tuple[LMInputs, VisualTokens]:
        """Pre-LLM selection, then the spliced LLM batch with the method's position convention."""
        visual = self.method.select(ctx)
        mode = self.method.position_mode_for(self.adapter.family)
        return self.adapter.splice(ctx.prompt, visual, ctx.vision, mode), visual

    @torch.no_grad()
    def generate(self, prompt: PromptBatch, max_new_tokens: int = 16,
                 vision: VisionFeatures | None = None) -> PrunedGeneration:
        """Greedy answers for a batch, with the method applied at every point it acts.

        ``vision``: the prompt's vision features (``adapter.vision_features(prompt)``) when several methods answer
        the same batch: the frozen tower's output does not depend on the method, and methods only read it.
        """
        ctx = self.context(prompt, vision)
        inputs, visual = self.llm_inputs(ctx)
        res = self.adapter.generate(inputs, max_new_tokens, self.method.llm_hooks(ctx), self.method.decode_hooks(ctx))
        kept_index = [visual.source_index[b, : int(visual.count[b])].tolist() for b in range(prompt.batch_size)]
        return PrunedGeneration(
            texts=self.adapter.decode(res.tokens),
            tokens=res.tokens,
            kept=visual.count,
            kept_index=kept_index,
            final_index=res.final_visual_index,
            visual_per_layer=res.visual_per_layer,
            cached_visual_per_layer=res.cached_visual_per_layer,
        )

    @torch.no_grad()
    def logits(self, prompt: PromptBatch) -> tuple[Tensor, LMInputs]:
        """Full-sequence logits (B, L', V) of the pruned batch (in-LLM hooks applied) and the LLM inputs."""
        ctx = self.context(prompt)
        inputs, _ = self.llm_inputs(ctx)
        res = self.adapter.forward(inputs, self.method.llm_hooks(ctx))
        return self.adapter.runner.logits(res.hidden), inputs
