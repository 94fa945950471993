"""The registered ``stepprune`` method: the selector's two paths, training and inference, in one module.

* **Inference** (:meth:`StepPrune.select`, no grad): encoder (alpha = 1) -> memory -> the batched pointer loop with
  a static KV cache and no host sync inside a chunk of steps (captured as CUDA graphs on CUDA, ``config.loop``) -> per-sample kept indices sorted ascending (original spatial
  order) -> the *raw* pre-projector tokens of those indices through the frozen projector. Noise gate, SoftTopK and
  denoiser are dropped (Sec. 12 item 7; ``denoise_at_inference`` is the ablation). The last selection's
  diagnostics are stashed on ``self.last_diagnostics``.
* **Training** (:meth:`StepPrune.train_forward`): the same loop with autograd (deterministic argmax, so the
  training selection equals the inference selection for fixed weights) -> p_t, a_t (Eq. 10) -> s (Eq. 11) ->
  g = SoftTopK(s / sg(max s); k_bar, beta) (Eq. 12) -> VP noise gate (Eq. 13) -> denoiser (Eq. 14) -> frozen
  projector. It returns all N tokens (original positions) for the trainer's L_LM, and ``aux_loss`` = lambda times
  the straight-through length term of Eq. (15). k_bar and the running noise scale are updated after use. The
  ablation ``gate="attention"`` replaces noise gate and denoiser by a log-g attention bias on the raw tokens
  (``TrainOutput.biases``; :func:`stepprune.selector.gate.attention_gate`).

Backbones: LLaVA-1.5 (tokens = CLIP patch features, d_tok = d_v) and Qwen2.5-VL (selection at merged-token
granularity; a token row is its 4 pre-merger patch features concatenated, d_tok = 4 d_vision, so one g gates all
four, the encoder projects d_tok -> d, and the denoiser acts on each 1/4 of the row). The backbone dimensions
(d_tok, d_llm, token_group) are read from the adapter by :meth:`StepPrune.bind` — or at the first forward — and
stored in the config, so a checkpoint records them and is checked against the backbone it is loaded on (the
shared :class:`~stepprune.methods.backbone_bound.BackboneBoundMethod` logic).

Trainer contract: call ``method.bind(adapter)`` before building the optimizer (the modules do not exist before the
dimensions are known), set ``config.total_steps`` to the number of optimizer steps, and pass the 0-based optimizer
step to :meth:`train_forward`. Loss = ``adapter.lm_loss(adapter.forward(adapter.splice(prompt, out.visual,
vision, "original"), biases=out.biases)) + out.aux_loss`` (:meth:`stepprune.PrunedVLM.forward`). Under data
parallelism each rank's k_bar tracks its own batches.

Not implemented (spec Sec. 7.2, "for ablation only"): the teacher-forced parallel recomputation of the decoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stepprune.backbones.base import BackboneAdapter
from stepprune.backbones.types import VisualTokens
from stepprune.methods.backbone_bound import BackboneBoundMethod
from stepprune.methods.base import SelectionContext, TrainOutput
from stepprune.methods.registry import register
from stepprune.selector.config import StepPruneConfig
from stepprune.selector.decoder import Memory, PointerDecoder
from stepprune.selector.denoiser import DiagonalDenoiser
from stepprune.selector.encoder import CrossModalEncoder
from stepprune.selector.gate import HARD_FLOOR, NoiseScale, attention_gate, straight_through, vp_noise_gate
from stepprune.selector.graphs import GraphedLoop
from stepprune.selector.layers import init_weights
from stepprune.selector.loop import Rollout, run_selection, selection_limits
from stepprune.selector.objective import RunningBudget, Schedules, length_term
from stepprune.selector.scores import aggregate_scores, alive_probabilities, expected_count, log_survival
from stepprune.selector.soft_topk import soft_topk, soft_topk_sinkhorn


def backbone_dims(adapter: BackboneAdapter) -> dict[str, int]:
    """The backbone-derived selector dimensions: visual token width, LLM width, patch features per token."""
    return {"d_tok": int(adapter.visual_token_dim), "d_llm": int(adapter.hidden_size),
            "token_group": int(adapter.visual_token_group)}


@register
class StepPrune(BackboneBoundMethod):
    """StepPrune: a pointer-network selector that picks visual tokens one at a time and stops by itself."""

    name = "stepprune"
    config_class = StepPruneConfig
    hook_point = "pre_llm"
    uses_text = True
    training_free = False
    budgeted = False
    dim_descriptions = {"d_tok": "visual token width", "d_llm": "LLM embedding width",
                        "token_group": "patch features per visual token"}

    def __init__(self, config: StepPruneConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self.schedules = Schedules(self.config)
        self.last_diagnostics: dict[str, Tensor] = {}
        if self.config.bound:
            self._build()

    # ------------------------------------------------------------------------------------------- building
    @property
    def built(self) -> bool:
        return hasattr(self, "decoder")

    def _build(self, device: torch.device | None = None) -> None:
        c = self.config
        self.encoder = CrossModalEncoder(
            c.d_tok, c.d_llm, c.d, c.heads, c.mlp_ratio, c.encoder_layers,
            project_input=c.input_projection == "always" or c.d_tok != c.d,
            causal=c.causal_encoder, type_embedding=c.type_embedding,
            input_norm=c.input_norm, text_attention=c.text_attention)
        self.decoder = PointerDecoder(
            c.d, c.heads, c.mlp_ratio, c.decoder_layers, c.k_max, c.step_embedding, c.pointer, c.mask_glimpse,
            c.logit_clip, c.init_std)
        init_weights(self.encoder, c.init_std)
        init_weights(self.decoder, c.init_std)
        self.denoiser = None
        if (c.denoiser and c.gate == "noise") or c.denoise_at_inference:
            self.denoiser = DiagonalDenoiser(c.d_tok // c.token_group, c.token_group, c.mlp_ratio)
            init_weights(self.denoiser, c.init_std)
            self.denoiser.zero_init_outputs()
        self.noise = NoiseScale(c.noise_scale, c.noise_momentum)
        self.kbar = RunningBudget(c.k_max, c.kbar_momentum)
        if device is not None:
            self.to(device)

    def backbone_dims(self, adapter: BackboneAdapter) -> dict[str, int]:
        return backbone_dims(adapter)

    def _ready(self, ctx: SelectionContext) -> None:
        if not self.built:
            self.bind(ctx.adapter)
        width = ctx.vision.tokens.shape[-1]
        if width != self.config.d_tok:
            raise ValueError(f"stepprune selector expects visual tokens {self.config.d_tok} wide, got {width}")

    # ------------------------------------------------------------------------------------------- shared
    def _memory(self, ctx: SelectionContext, alpha: float) -> Memory:
        return self.decoder.memory(self._encode(ctx, alpha)[0])

    def _encode(self, ctx: SelectionContext, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder output H_v (B, N, d), and the question embeddings (B, Lq, D) with their (B, Lq) mask."""
        text, text_mask = ctx.question_embeds()
        return self.encoder(ctx.vision.tokens, ctx.vision.token_mask, text, text_mask, alpha), text, text_mask

    @torch.no_grad()
    def text_effects(self, ctx: SelectionContext, h_v: Tensor, text: Tensor, text_mask: Tensor,
                     alpha: float) -> dict[str, Tensor]:
        """How much the question moves the memory H_v (B, N, d), as relative Frobenius distances over the valid
        image rows (0-dim tensors):

        * ``text_effect``: against no question, ||H_v - H_v(alpha = 0)|| / ||H_v(alpha = 0)||;
        * ``question_effect``: against the next sample's question on the same image (the batch rolled by one;
          only for B > 1), ||H_v - H_v(q_{b+1})|| / ||H_v||.

        A text_effect well above question_effect means the text acts as a constant bias; question_effect near 0
        means the selection cannot depend on which question is asked.
        """
        x, mask = ctx.vision.tokens, ctx.vision.token_mask
        w = mask[..., None].to(h_v.dtype)
        h_v = h_v.detach()

        def dist(other: Tensor, ref: Tensor) -> Tensor:
            return ((h_v - other) * w).norm() / (ref * w).norm().clamp_min(1e-12)

        # At alpha = 0 (the start of the text-gate warm-up) H_v already is the no-question memory.
        h0 = h_v if alpha == 0 else self.encoder(x, mask, text, text_mask, 0.0)
        out = {"text_effect": dist(h0, h0)}
        if h_v.shape[0] > 1:
            swapped = self.encoder(x, mask, text.roll(1, 0), text_mask.roll(1, 0), alpha)
            out["question_effect"] = dist(swapped, h_v)
        return out

    def _rollout(self, ctx: SelectionContext, mem: Memory, train: bool) -> Rollout:
        c = self.config
        k_min, cap = selection_limits(ctx.vision.num_tokens, c.k_min, c.k_max, c.k_max_ratio)
        if not train and self.loop_engine(mem.z.device) == "graph":
            return self._graphed(mem).run(mem, ctx.vision.token_mask, k_min, cap)
        return run_selection(self.decoder, mem, ctx.vision.token_mask, k_min, cap, c.k_max, train=train,
                             tau=c.tau, sync_every=c.sync_every)

    def loop_engine(self, device: torch.device) -> str:
        """The inference loop engine on ``device``: ``config.loop``, with ``"auto"`` = graph on CUDA, else eager."""
        loop = self.config.loop
        if loop == "auto":
            return "graph" if device.type == "cuda" else "eager"
        if loop == "graph" and device.type != "cuda":
            raise ValueError(f"stepprune: loop='graph' needs CUDA, the selector runs on {device}")
        return loop

    def _graphed(self, mem: Memory) -> GraphedLoop:
        """The captured loop for this memory's shapes, built on first use and kept while it matches (a plain
        attribute, not a submodule: it holds no parameters and is never saved)."""
        c = self.config
        B, slots, _ = mem.z.shape
        key = (B, slots, c.k_max, c.sync_every, mem.z.dtype)
        loops = self.__dict__.setdefault("_graph_loops", {})
        loop = loops.get(key)
        if loop is None or not loop.matches(self.decoder, *key, diagnostics=True):
            loop = loops[key] = GraphedLoop(self.decoder, B, slots, c.k_max, c.sync_every, mem.z.dtype, tau=c.tau)
        return loop

    @staticmethod
    def _sorted_selection(ro: Rollout) -> Tensor:
        """(B, K_max) kept slots ascending (original spatial order), the sentinel N after the K_b-th."""
        return ro.selection.sort(dim=1).values

    # ------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def select(self, ctx: SelectionContext) -> VisualTokens:
        """Hard, batched selection: each sample's K_b kept tokens (raw features, frozen projector), sorted."""
        self._ready(ctx)
        mem = self._memory(ctx, alpha=1.0)
        ro = self._rollout(ctx, mem, train=False)
        order = self._sorted_selection(ro)
        width = int(ro.count.max())  # one host read, after the loop
        N = mem.stop_index
        index = order[:, :width]
        index = torch.where(index == N, 0, index)  # padding rows (>= K_b) point at token 0; splice ignores them
        tokens = ctx.vision.tokens
        raw = torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))
        if self.config.denoise_at_inference:
            raw = self.denoiser(raw.to(self.denoiser.ln_1.weight.dtype))
        self.last_diagnostics = {
            "count": ro.count, "selection": order, "selection_order": ro.selection, "steps": ro.steps,
            "capped": ro.capped, "log_prob": ro.log_prob, "entropy": ro.entropy, "p1_stop": ro.p1_stop,
        }
        return VisualTokens(ctx.adapter.project(raw), index, ro.count.clone())

    # ------------------------------------------------------------------------------------------- training
    def soft_scores(self, ro: Rollout, token_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Eqs. (7), (10), (11) along the realised trajectory.

        Returns:
            p: (B, T, N+1) p_t with the steps after each episode zeroed.
            alive: (B, T) a_t.
            k_hat: (B,) K^ = sum_{t <= T_ep} a_{t+1}.
            s: (B, N) aggregated scores (0 on padding).
        """
        c = self.config
        N = ro.logits.shape[-1] - 1
        valid = ro.valid
        p = torch.softmax(ro.logits / c.tau, dim=-1) * valid[..., None].float()
        alive, alive_next = alive_probabilities(log_survival(ro.logits, N, c.tau), valid)
        s = aggregate_scores(p, N, c.gamma, c.score_mode, alive=alive)
        return p, alive, expected_count(alive_next, valid), torch.where(token_mask, s, 0.0)

    @staticmethod
    def hard_selection(ro: Rollout, token_mask: Tensor) -> Tensor:
        """(B, N) bool: 1[i in S_b], the tokens the loop selected (the stop sentinel N dropped)."""
        B, N = token_mask.shape
        hard = torch.zeros(B, N + 1, dtype=torch.bool, device=token_mask.device)
        hard.scatter_(1, ro.selection, True)
        return hard[:, :N] & token_mask

    def polarise(self, s: Tensor, token_mask: Tensor, budget: Tensor, beta: float) -> Tensor:
        """Eq. (12): g = SoftTopK(s / sg(max s); budget, beta), (B, N) (0 on padding)."""
        scale = s.detach().amax(dim=1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
        if self.config.soft_topk_solver == "sinkhorn":
            return soft_topk_sinkhorn(s / scale, budget, beta, token_mask)
        return soft_topk(s / scale, budget, beta, token_mask)

    def train_forward(self, ctx: SelectionContext, step: int) -> TrainOutput:
        """The differentiable training path for one batch at optimizer step ``step`` (0-based).

        Returns:
            TrainOutput with all N gated + denoised tokens through the frozen projector (original positions),
            ``aux_loss`` = lambda(step) * length term of Eq. (15), and detached metrics.
        """
        self._ready(ctx)
        c = self.config
        alpha, beta, lam = self.schedules.alpha(step), self.schedules.beta(step), self.schedules.lam(step)
        vision = ctx.vision
        mask, n = vision.token_mask, vision.num_tokens
        h_v, text, text_mask = self._encode(ctx, alpha)
        mem = self.decoder.memory(h_v)
        ro = self._rollout(ctx, mem, train=True)
        p, alive, k_hat, s = self.soft_scores(ro, mask)
        budget = self.kbar.budget(n, ro.count if c.per_sample_k else None)
        if c.budget_grad:  # the value stays; the gradient is K^'s, so L_LM can ask for more (or fewer) tokens
            k_hat_b = k_hat if c.per_sample_k else k_hat.mean().expand_as(k_hat)
            budget = budget + (k_hat_b - k_hat_b.detach())
        g = self.polarise(s, mask, budget, beta)

        x, biases = self._gate(vision.tokens.to(self.encoder.text_proj.weight.dtype), g, ro, mask)
        B, N = mask.shape
        index = torch.arange(N, device=x.device)[None].expand(B, -1)
        visual = VisualTokens(ctx.adapter.project(x), index, n.clone())

        length = length_term(ro.count, k_hat, n).mean()
        metrics = self._metrics(ro, p, alive, k_hat, g, budget, mask, n, length, alpha, beta, lam)
        metrics.update(self.text_effects(ctx, h_v, text, text_mask, alpha))
        self.kbar.update(ro.count)
        order = self._sorted_selection(ro)
        self.last_diagnostics = {"count": ro.count, "selection": order, "selection_order": ro.selection,
                                 "steps": ro.steps, "capped": ro.capped, "g": g.detach(), "scores": s.detach()}
        return TrainOutput(visual, lam * length, metrics, biases=biases)

    def _gate(self, x: Tensor, g: Tensor, ro: Rollout, mask: Tensor) -> tuple[Tensor, list]:
        """How g reaches the LLM: the (B, N, d_tok) pre-projector tokens it sees and its attention biases.

        ``gate="noise"``: Eq. (13) (or its straight-through hard form), then the denoiser, Eq. (14); no biases.
        ``gate="attention"``: the raw tokens and one log-g attention bias over every layer (with ``gate_forward=
        "hard"``, the bias of the inference set carrying the soft g's gradient).
        """
        c = self.config
        if c.gate == "attention":
            if c.gate_forward == "hard":
                return x, [attention_gate(straight_through(self.hard_selection(ro, mask), g), HARD_FLOOR)]
            return x, [attention_gate(g)]
        self.noise.update(x, mask)
        noise = self.noise.sample(x).to(x.dtype)
        gated = vp_noise_gate(x, g, noise, c.gate_clamp)
        if c.gate_forward == "hard":  # straight-through: the inference set's values, the soft gate's gradient
            hard = vp_noise_gate(x, self.hard_selection(ro, mask).to(g.dtype), noise, c.gate_clamp)
            gated = hard + gated - gated.detach()
        if c.denoiser:
            gated = self.denoiser(gated)
        return gated, []

    @torch.no_grad()
    def _metrics(self, ro: Rollout, p: Tensor, alive: Tensor, k_hat: Tensor, g: Tensor, budget: Tensor,
                 mask: Tensor, n: Tensor, length: Tensor, alpha: float, beta: float, lam: float) -> dict[str, Any]:
        """Detached logging scalars (0-dim tensors; ``float()`` them when logging)."""
        c = self.config
        K = ro.count.float()
        N = mask.shape[1]
        valid = ro.valid.float()
        logp = torch.log_softmax(ro.logits / c.tau, dim=-1)
        entropy = (-(p * logp).sum(dim=-1) * valid).sum() / valid.sum().clamp_min(1.0)
        chosen = ro.logits.argmax(dim=-1)
        log_prob = (logp.gather(2, chosen[..., None]).squeeze(-1) * valid).sum(dim=1)  # Eq. (9)
        # p(STOP) at the first step where stopping is allowed (step K_min_b + 1; p_1(STOP) is 0 when K_min >= 1).
        k_min, _ = selection_limits(n, c.k_min, c.k_max, c.k_max_ratio)
        first = k_min.clamp(max=p.shape[1] - 1)
        p1_stop = torch.where(k_min < p.shape[1], p[torch.arange(p.shape[0], device=p.device), first, N], 0.0)
        # Overlap of the soft selection (top-round(k) of g) with the hard one, |TopK(g) ∩ S| / |S|.
        hard = self.hard_selection(ro, mask)
        rank = torch.argsort(torch.argsort(g.masked_fill(~mask, -1.0), dim=1, descending=True), dim=1)
        soft = rank < budget.round().long()[:, None]
        overlap = ((soft & hard).sum(dim=1).float() / K.clamp_min(1.0)).mean()
        w = mask.float()
        g_mean = (g * w).sum() / w.sum()
        g_std = (((g - g_mean) ** 2 * w).sum() / w.sum()).sqrt()  # spread of g over valid tokens
        # Mean g on the selection S and on the rest: under a flat pointer Eq. (11) can open the rest more than S
        # (g_selected < g_rest; why and measurements: StepPruneConfig.tau).
        rest = mask & ~hard
        g_selected = ((g * hard).sum(dim=1) / hard.sum(dim=1).clamp_min(1)).mean()
        g_rest = ((g * rest).sum(dim=1) / rest.sum(dim=1).clamp_min(1)).mean()
        return {
            "K": K.detach(),  # per sample: the trainer gathers it across ranks for the K histogram
            "K_mean": K.mean(), "K_std": K.std(unbiased=False), "kbar": self.kbar.value.clone(),
            "K_minus_Khat": (K - k_hat.detach()).mean(), "p1_stop": p1_stop.mean(),
            "pointer_entropy": entropy, "overlap": overlap, "log_prob": log_prob.mean(),
            "frac_capped": ro.capped.float().mean(), "frac_kmin": (ro.count <= c.k_min).float().mean(),
            "g_std": g_std, "g_selected": g_selected, "g_rest": g_rest,
            "alive_mean": (alive * valid).sum() / valid.sum().clamp_min(1.0),
            "length": length.detach(), "length_loss": lam * length.detach(),
            "alpha": torch.tensor(alpha), "beta": torch.tensor(beta), "lambda": torch.tensor(lam),
        }
