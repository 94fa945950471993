"""The StepPrune selector's typed config: widths, selection limits, surrogate knobs, schedules and ablation switches.

Every default follows the design spec (``shared/design/stepprune.md``, Sec. 8). The open choices of its Sec. 12
are fields here where a switch is cheap; the chosen default is named next to each field.

Backbone-derived dimensions (``d_tok``, ``d_llm``, ``token_group``) are normally ``None`` at construction and
filled in by :meth:`StepPrune.bind` (or the first forward) from the adapter, so that a saved config always records
the backbone shape it was built for and a checkpoint can be checked against the backbone it is loaded on.

Open choices of spec Sec. 12, as decided here (switch in brackets):

1. Pointer logits: a dedicated single-head pointer attention W_p^{Q,K} [``pointer="cross_attention"``: the
   head-averaged last-layer cross-attention logits]; the log-space mask also masks every decoder layer's
   cross-attention [``mask_glimpse``].
2. W_t is part of the encoder (``encoder.text_proj``); the paper's "pointer projection" is W_p^{Q,K}
   (``decoder.pointer_q`` and the pointer-key slice of ``decoder.memory_proj``). All are trained.
3. s sums over the realised steps t <= T_ep only (no continued rollout; no switch).
4. SoftTopK budget: the running batch mean k_bar [``per_sample_k``: each sample's own K_b].
5. Noise variance: global running RMS [``noise_scale="token"``].
6. Position ids at inference: original, with gaps [``positions="contiguous"``, the shared MethodConfig field].
7. Denoiser at inference: dropped [``denoise_at_inference``].
8. Training data: not decided here (the trainer's business).
9. K_max / lambda: the spec's ~64-token operating point, 192 / 0.3 [``k_max``, ``k_max_ratio``, ``lambda_``].

Smaller choices: the stop slot is the last memory row (index N); K_min is clamped to N_b and the cap is
min(K_max, N_b) so every sample always has a legal action; logits, softmax, a_t and the SoftTopK root are fp32
(the root is bisected in fp64); alpha ends at 1 (the inference value); k_bar and the noise scale are updated inside
``train_forward`` after use (per micro-batch); the global noise EMA starts from the first batch.

How a trainer uses it: set ``total_steps`` to the number of **optimizer** steps of the whole run (micro-batches
divided by the gradient-accumulation factor, times epochs) before the first :meth:`StepPrune.train_forward`, and
pass the 0-based optimizer step index as ``step``. The alpha / beta / lambda schedules are fractions of it.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from stepprune.methods.base import MethodConfig

ScoreMode = Literal["full", "last_step", "uniform", "alive"]


@dataclasses.dataclass
class StepPruneConfig(MethodConfig):
    """Config of the ``stepprune`` method.

    Attributes:
        d: selector width (encoder, decoder, memory). Spec default 1024.
        heads: attention heads of the encoder and decoder blocks. Spec default 16.
        mlp_ratio: FFN hidden width as a multiple of the block width (encoder, decoder, denoiser).
        encoder_layers: pre-norm bidirectional blocks of the input encoder, Eq. (3). Spec: 2.
        decoder_layers: pointer-decoder layers L_dec, Eq. (5). Spec default 2.
        d_tok: width of one visual token row (LLaVA: d_v; Qwen2.5-VL: 4 * d_vision). Filled from the backbone.
        d_llm: LLM embedding width, the input of W_t. Filled from the backbone.
        token_group: pre-merger patch features per visual token (LLaVA 1, Qwen2.5-VL 4): the denoiser acts on
            each d_tok / token_group-wide patch feature. Filled from the backbone.
        input_projection: ``"auto"`` projects the visual tokens d_tok -> d only when d_tok != d (LLaVA at d = d_v
            enters as is, as the spec says; Qwen's concatenated 4 x 1280 = 5120 features are projected, the spec's
            first option); ``"always"`` forces the projection.
        causal_encoder: ablation (Table 4a): a causal instead of bidirectional encoder.
        type_embedding: a learned 2-way modality embedding on the encoder input (spec: optional, default off).
        input_norm: rescale each visual token to unit RMS before the encoder (ablation; not in the spec, whose image
            tokens "enter as they are"). Why it exists: the raw vision features (RMS 3.2 on the tiny backbone) fill
            the encoder's residual stream, so what the blocks add from the question (at init scale) hardly moves
            the memory. With ``init_std`` 1 / sqrt(d) it lets an evidence-supervised probe read the question within
            300 steps; under the LM loss it raised ``question_effect`` tenfold but not accuracy. Default off.
            Measurements: ``docs/results/selector_training.md``.
        text_attention: ``"joint"`` (the spec: one softmax over image and question keys) or ``"split"`` (not in the
            spec: one softmax over the image keys and one over the question keys, outputs added). Why it exists:
            under the joint softmax a question of ~20 tokens gets ~3 % of each patch's attention at init, so a
            word-patch match is learned from a diluted signal. Default "joint".
        step_embedding: learned step embeddings P_t added to the decoder queries (spec: default on).
        pointer: Sec. 12 item 1. ``"head"`` (default): a dedicated single-head pointer attention W_p^{Q,K},
            Eq. (6); ``"cross_attention"``: the head-averaged pre-softmax cross-attention logits of the last
            decoder layer.
        mask_glimpse: Sec. 12 item 1: whether the log-space mask M_t also masks every decoder layer's
            cross-attention (default: yes).
        logit_clip: optional Bello/Kool clipping C * tanh(l / C) of the pointer logits before the mask (None: off).
        tau: pointer softmax temperature, Eq. (7). Argmax (the selection) does not depend on it, but whether the
            training gate opens the selection does. Eq. (11) credits a picked token only up to its own step and an
            unpicked one over the whole episode, so under a flat pointer the tokens left out collect as much credit
            as the picks, and the LM trains on a gate that opens what inference drops (the metrics ``g_selected``
            and ``g_rest``: mean g on S and off it). Lower tau opens S and closes the rest (measured by
            ``jobs/bench_selection_dynamics.py``; ``docs/results/selector_training.md``).
        k_max: step cap K_max, Eq. (8). Per sample the cap is also at most its token count N_b.
        k_max_ratio: for variable N (Qwen2.5-VL): per-sample cap ceil(ratio * N_b), further capped by ``k_max``.
        k_min: minimum selections K_min: the stop slot is masked while fewer have been selected.
        gamma: geometric decay of Eq. (11).
        score_mode: Table 4b variant of Eq. (11): ``"full"``, ``"last_step"``, ``"uniform"`` (no a_t, no gamma)
            or ``"alive"`` (a_t kept, gamma = 1). See :func:`stepprune.aggregate_scores`.
        soft_topk_solver: ``"closed_form"`` (two-anchor sigmoid, bisection + one differentiable Newton step) or
            ``"sinkhorn"`` (log-domain reference, autograd through the unrolled loop).
        per_sample_k: Sec. 12 item 4. False (paper): the SoftTopK budget is the running batch mean k_bar; True
            (ablation): each sample's own hard count K_b.
        kbar_momentum: rho of the k_bar EMA (initialised at K_max).
        budget_grad: ablation, not in the spec. The SoftTopK budget keeps its value (k_bar, or K_b with
            ``per_sample_k``) but carries the gradient of K^ (the batch mean of K^ for k_bar), straight-through
            as in Eq. (15). Why: with a detached budget the LM loss's gradient on the stop vector pointed the same
            way as the length term's (cosine +0.19 to +0.72 in three embedded runs), so nothing in the loss held K
            up. This lets L_LM reach the count through the SoftTopK's implicit gradient in k. It holds K up (at
            the cap against lambda 0.3) but the selection tied random in accuracy. Default off. Measurements:
            ``docs/results/selector_training.md``.
        gate_forward: what the gate's *forward* uses (ablation; not in the spec). ``"soft"`` (spec, paper):
            g = SoftTopK(s), so the LM sees the soft top-k_bar of the scores s. ``"hard"`` (straight-through): the
            gate's value is the hard selection 1[i in S], the set inference keeps, and its gradient is that of the
            soft g (same noise). Why it exists: under "soft" the tokens left out still pass sqrt(g) of their signal
            (noise gate) or g of their attention weight (attention gate), so the LM may see more than the
            selection (``stepprune.train_gap`` measures the train/inference gap). With the noise gate "hard" did
            worse than random on the embedded default, so "soft" stays the default. With the attention gate the
            straight-through sits on g, not on log g: a left-out token's gradient is then the first-order effect of
            letting it in (DynamicViT's attention masking), though the forward hides it (behind a 1e-20 floor:
            at the soft gate's 1e-6 the selectors learned to let left-out tokens through). Measurements:
            ``docs/results/selector_training.md``.
        gate: how g reaches the LLM in training (ablation; not in the spec). ``"noise"`` (spec): the VP noise gate
            of Eq. (13), then the denoiser. ``"attention"``: the raw tokens, with log(g + 1e-6) added to every
            query's attention logit to each visual key in every LLM layer (:func:`stepprune.selector.gate.
            attention_gate`), so g = 0 hides a token (up to the floor) and a hard g is the inference forward; no
            noise, no denoiser (``denoiser`` is ignored). Why it exists: under the noise gate the trained denoiser
            turns pure noise into a content-free fill that scores about what the training path scores, which leaves
            the selection little to gain. With tau 0.03 and ``per_sample_k`` it keeps evidence at 5-10x chance and
            beats random in answer NLL, not in accuracy; training is about 30 % slower. Default "noise".
            Measurements: ``docs/results/selector_training.md``.
        beta_start, beta_end: SoftTopK entropic weight, cosine-annealed over
            min(``beta_anneal_steps``, ``beta_anneal_frac`` * total_steps) optimizer steps, then fixed.
        noise_scale: Sec. 12 item 5. ``"global"`` (default): sigma_n^2 is an EMA over training batches of the
            mean square of the visual features; ``"token"``: each token's own mean square (leaks one scalar).
        noise_momentum: EMA momentum of the global noise scale.
        gate_clamp: g is clamped to [c, 1 - c] on the gradient path of Eq. (13) (the values stay exact).
        denoiser: whether the training path denoises the gated tokens, Eq. (14).
        denoise_at_inference: Sec. 12 item 7: apply the denoiser to the selected raw tokens at inference
            (ablation; default: dropped, as in AutoSelect/DiffPrune).
        lambda_: length-penalty weight of Eq. (15).
        lambda_delay_frac, lambda_ramp_frac: optional lambda warm-up (spec Sec. 6, not in the paper; default off):
            0 for the first ``delay`` fraction of steps, then linear to ``lambda_`` over ``ramp``.
        alpha_start: text-gate value at step 0; it rises linearly to 1 over the first ``alpha_warmup_frac`` of
            the optimizer steps and is 1 at inference.
        total_steps: number of optimizer steps of the training run (required by :meth:`train_forward`).
        sync_every: inference loop: read the single ``all(done)`` flag every this many steps (one host sync per
            chunk, never inside a chunk); the chunk a CUDA graph captures.
        loop: inference loop engine: ``"graph"`` replays ``sync_every``-step chunks captured as CUDA graphs
            (:mod:`stepprune.selector.graphs`; CUDA only), ``"eager"`` runs the same steps eagerly, ``"auto"``
            (default) is graph on CUDA and eager elsewhere. Both select the same tokens.
        init_std: std of e_start, e_STOP, step embeddings and linear weights (trunc-normal).
    """

    d: int = 1024
    heads: int = 16
    mlp_ratio: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    d_tok: int | None = None
    d_llm: int | None = None
    token_group: int | None = None
    input_projection: Literal["auto", "always"] = "auto"
    causal_encoder: bool = False
    type_embedding: bool = False
    input_norm: bool = False
    text_attention: Literal["joint", "split"] = "joint"
    step_embedding: bool = True
    pointer: Literal["head", "cross_attention"] = "head"
    mask_glimpse: bool = True
    logit_clip: float | None = None
    tau: float = 1.0
    k_max: int = 192
    k_max_ratio: float | None = None
    k_min: int = 1
    gamma: float = 0.99
    score_mode: ScoreMode = "full"
    soft_topk_solver: Literal["closed_form", "sinkhorn"] = "closed_form"
    per_sample_k: bool = False
    budget_grad: bool = False
    gate_forward: Literal["soft", "hard"] = "soft"
    gate: Literal["noise", "attention"] = "noise"
    kbar_momentum: float = 0.9
    beta_start: float = 0.2
    beta_end: float = 0.02
    beta_anneal_steps: int = 2000
    beta_anneal_frac: float = 0.5
    noise_scale: Literal["global", "token"] = "global"
    noise_momentum: float = 0.99
    gate_clamp: float = 1e-4
    denoiser: bool = True
    denoise_at_inference: bool = False
    lambda_: float = 0.3
    lambda_delay_frac: float = 0.0
    lambda_ramp_frac: float = 0.0
    alpha_start: float = 0.0
    alpha_warmup_frac: float = 0.1
    total_steps: int | None = None
    sync_every: int = 16
    loop: Literal["auto", "eager", "graph"] = "auto"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.budget is not None or self.ratio is not None:
            raise ValueError(f"{name}: StepPrune chooses K per image and takes no budget/ratio; set k_max "
                             "(or k_max_ratio) for the step cap and lambda_ for the operating point")
        if self.d % self.heads:
            raise ValueError(f"{name}: d={self.d} is not divisible by heads={self.heads}")
        for field in ("d", "heads", "mlp_ratio", "encoder_layers", "decoder_layers", "k_max", "sync_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}: {field} must be >= 1, got {getattr(self, field)}")
        if not 0 <= self.k_min <= self.k_max:
            raise ValueError(f"{name}: need 0 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if self.k_max_ratio is not None and not 0.0 < self.k_max_ratio <= 1.0:
            raise ValueError(f"{name}: k_max_ratio must be in (0, 1], got {self.k_max_ratio}")
        if self.tau <= 0 or self.beta_start <= 0 or self.beta_end <= 0:
            raise ValueError(f"{name}: tau, beta_start and beta_end must be > 0")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"{name}: gamma must be in (0, 1], got {self.gamma}")
        if self.score_mode not in ("full", "last_step", "uniform", "alive"):
            raise ValueError(f"{name}: unknown score_mode {self.score_mode!r}")
        if self.pointer not in ("head", "cross_attention"):
            raise ValueError(f"{name}: pointer must be 'head' or 'cross_attention', got {self.pointer!r}")
        if self.soft_topk_solver not in ("closed_form", "sinkhorn"):
            raise ValueError(f"{name}: unknown soft_topk_solver {self.soft_topk_solver!r}")
        if self.noise_scale not in ("global", "token"):
            raise ValueError(f"{name}: noise_scale must be 'global' or 'token', got {self.noise_scale!r}")
        if self.loop not in ("auto", "eager", "graph"):
            raise ValueError(f"{name}: loop must be 'auto', 'eager' or 'graph', got {self.loop!r}")
        if self.input_projection not in ("auto", "always"):
            raise ValueError(f"{name}: input_projection must be 'auto' or 'always'")
        if self.gate not in ("noise", "attention"):
            raise ValueError(f"{name}: gate must be 'noise' or 'attention', got {self.gate!r}")
        if self.gate_forward not in ("soft", "hard"):
            raise ValueError(f"{name}: gate_forward must be 'soft' or 'hard', got {self.gate_forward!r}")
        if self.text_attention not in ("joint", "split"):
            raise ValueError(f"{name}: text_attention must be 'joint' or 'split', got {self.text_attention!r}")
        if not 0.0 <= self.gate_clamp < 0.5:
            raise ValueError(f"{name}: gate_clamp must be in [0, 0.5)")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"{name}: total_steps must be >= 1, got {self.total_steps}")
        if self.d_tok is not None and self.token_group is not None and self.d_tok % self.token_group:
            raise ValueError(f"{name}: d_tok={self.d_tok} is not divisible by token_group={self.token_group}")

    @property
    def bound(self) -> bool:
        """Whether the backbone-derived dimensions are known (the modules can be built)."""
        return self.d_tok is not None and self.d_llm is not None and self.token_group is not None
