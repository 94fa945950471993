"""Runs a Hugging Face decoder-only language model over a (pruned) visual prefix, by composition.

``LLMRunner`` drives the model's own modules (``embed_tokens``, ``rotary_emb``, each decoder layer's public
``forward``, ``norm`` and ``lm_head``) in its own layer loop instead of calling the text model's ``forward``. That
is what lets one code path:

* take per-sample position ids with gaps (original positions) or contiguous ones, 1-D or 3-D (M-RoPE);
* drop tokens from the hidden states entering any layer (in-LLM methods), so that layer groups hold KV caches
  of different lengths, each with its own padding mask and its own decode positions;
* evict cache entries during generation (decode-time methods);
* add a per-(query, key) attention bias from a layer on during prefill (the teacher-forced form of eviction), or a
  per-key one (a keep gate), which rides in the keys to SDPA's flash kernel through an attention function registered
  with transformers' ``AttentionInterface`` (:mod:`stepprune.backbones.key_bias_attention`);
* recompute one layer's attention rows or keys from its recorded input while the model keeps SDPA.

No HF code is copied or patched: masks are explicit 4-D boolean masks (float for eager attention), the cache is
a small object with the ``update(key, value, layer_idx)`` method HF attention calls, and keep-all runs reproduce
the unmodified model's logits and greedy tokens (tested on both supported families).

Shapes: B batch, L slots, D width, H heads, d head width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stepprune.backbones.hooks import AttentionBias, DecodeEvict, LayerEdit, PrefillDrop
from stepprune.backbones.key_bias_attention import NAME as KEY_BIAS_ATTENTION
from stepprune.backbones.types import PAD, SUFFIX, VISUAL, LMInputs

GENERATED = 4  # segment code of tokens produced by generation


class KVCache:
    """Per-layer key/value store in which layers may hold different numbers of slots.

    Implements the one method HF attention modules call (``update``), plus ``select`` for eviction.
    Keys are stored post-RoPE with their KV heads (before GQA repetition): (B, H_kv, L, d).
    """

    def __init__(self, num_layers: int):
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.keys[layer_idx] is not None:
            key = torch.cat([self.keys[layer_idx], key], dim=-2)
            value = torch.cat([self.values[layer_idx], value], dim=-2)
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        k = self.keys[layer_idx]
        return 0 if k is None else k.shape[-2]

    def select(self, layer_idx: int, index: Tensor) -> None:
        """Keeps slots ``index`` (B, L') of one layer's cache, in that order."""
        for store in (self.keys, self.values):
            t = store[layer_idx]
            store[layer_idx] = torch.gather(t, 2, index[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))

    def visual_entries(self, layer_idx: int, segment: Tensor) -> Tensor:
        """(B,) number of cached slots of this layer whose segment is VISUAL (``segment`` is its group's)."""
        return ((segment == VISUAL) & (segment != PAD)).sum(dim=1)


@dataclasses.dataclass
class SeqState:
    """The running sequence between two decoder layers during prefill (all tensors share B and L)."""

    hidden: Tensor  # (B, L, D)
    valid: Tensor  # (B, L) bool
    positions: Tensor  # (B, L) or (3, B, L)
    next_position: Tensor  # (B,)
    segment: Tensor  # (B, L) int8
    visual_index: Tensor  # (B, L)
    labels: Tensor | None  # (B, L)

    @property
    def mrope(self) -> bool:
        return self.positions.dim() == 3

    def gather(self, index: Tensor, valid: Tensor) -> SeqState:
        """Reorders/subsets slots with ``index`` (B, L'); ``valid`` (B, L') marks the real ones."""
        g = lambda t: torch.gather(t, 1, index)  # noqa: E731
        pos = (torch.stack([g(p) for p in self.positions]) if self.mrope else g(self.positions))
        return SeqState(
            hidden=torch.gather(self.hidden, 1, index[..., None].expand(-1, -1, self.hidden.shape[-1])),
            valid=valid,
            positions=pos,
            next_position=self.next_position,
            segment=torch.where(valid, g(self.segment), torch.zeros_like(g(self.segment))),
            visual_index=torch.where(valid, g(self.visual_index), -1),
            labels=None if self.labels is None else torch.where(valid, g(self.labels), -100),
        )


@dataclasses.dataclass
class _Group:
    """Layers [start, end) that share one cached slot layout during generation."""

    start: int
    end: int
    valid: Tensor  # (B, Lc) bool
    segment: Tensor  # (B, Lc) int8
    visual_index: Tensor  # (B, Lc)
    next_position: Tensor  # (B,)
    mrope: bool


@dataclasses.dataclass
class PrefillResult:
    """Output of :meth:`LLMRunner.prefill`.

    Attributes:
        hidden: (B, L', D) final-norm hidden states of the last layer's sequence.
        state: the sequence metadata after the last drop (labels travel with it).
        visual_per_layer: (B, num_layers) visual tokens entering each decoder layer.
        cache: the KV cache (None without ``use_cache``).
        groups: the layer groups and their cached slot layouts (generation state).
    """

    hidden: Tensor
    state: SeqState
    visual_per_layer: Tensor
    cache: KVCache | None
    groups: list[_Group]


@dataclasses.dataclass
class GenerationResult:
    """Output of :meth:`LLMRunner.generate`.

    Attributes:
        tokens: (B, T) generated ids; after a sample's EOS its row holds the pad id (as HF ``generate``).
        visual_per_layer: (B, num_layers) visual tokens entering each layer at prefill.
        cached_visual_per_layer: (B, num_layers) visual entries left in each layer's cache at the end.
        final_visual_index: per sample, the original visual indices left in the last layer's cache at the end
            (what survived every in-LLM drop and decode-time eviction).
        prefill_length: L', the padded length of the prefill batch.
    """

    tokens: Tensor
    visual_per_layer: Tensor
    cached_visual_per_layer: Tensor
    final_visual_index: list[list[int]]
    prefill_length: int


def causal_mask(valid: Tensor) -> Tensor:
    """(B, 1, L, L) bool: attend to earlier-or-same valid slots; every slot also attends to itself so that
    padding rows never see an all-masked row (which would give NaNs that leak through 0 * NaN)."""
    L = valid.shape[1]
    idx = torch.arange(L, device=valid.device)
    allowed = (idx[None, :] <= idx[:, None])[None] & valid[:, None, :]
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=valid.device)[None]
    return allowed[:, None]


def compact_index(keep: Tensor, order: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Left-padded index of kept slots. ``keep`` (B, L) bool; ``order`` optionally gives each sample's slot list.

    Returns:
        index (B, L') and valid (B, L'); padding rows point at slot 0 and are invalid.
    """
    rows = order if order is not None else [k.nonzero().flatten() for k in keep]
    L2 = max((r.numel() for r in rows), default=0)
    B = keep.shape[0]
    index = torch.zeros(B, L2, dtype=torch.long, device=keep.device)
    valid = torch.zeros(B, L2, dtype=torch.bool, device=keep.device)
    for b, r in enumerate(rows):
        if r.numel():
            index[b, L2 - r.numel():] = r
            valid[b, L2 - r.numel():] = True
    return index, valid


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Standard rotary application, x (B, H, L, d), cos/sin (B, L, d) as the model's rotary module returns them."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class LLMRunner:
    """Layer-loop driver for one HF text model (LLaMA and Qwen2.5-VL families).

    Args:
        text_model: the decoder stack (has ``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``).
        lm_head: the output projection.
    """

    def __init__(self, text_model: nn.Module, lm_head: nn.Module):
        self.text_model = text_model
        self.lm_head = lm_head
        self.layers = list(text_model.layers)
        self.num_layers = len(self.layers)
        self.config = text_model.config

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def _eager(self) -> bool:
        return self.config._attn_implementation == "eager"

    def _mask(self, allowed: Tensor, dtype: torch.dtype, bias: Tensor | None = None) -> Tensor:
        """The attention mask the decoder layers get: bool for SDPA, additive float for eager attention or when
        an :class:`AttentionBias` is active ((B, L, L) ``bias`` where allowed, the dtype's minimum elsewhere)."""
        if bias is not None:
            return torch.where(allowed, bias[:, None].to(dtype), torch.finfo(dtype).min)
        if self._eager:  # eager attention adds the mask to the logits
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        return allowed

    def _rotary(self, hidden: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.text_model.rotary_emb(hidden, positions)

    def embed(self, ids: Tensor) -> Tensor:
        """(B, L) ids -> (B, L, D) input embeddings."""
        return self.text_model.embed_tokens(ids)

    def logits(self, hidden: Tensor) -> Tensor:
        """Final-norm hidden states (..., D) -> logits (..., V)."""
        return self.lm_head(hidden)

    def _query_key(self, layer: int, hidden_in: Tensor, pe: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Post-RoPE queries (B, H, L, d) and GQA-repeated keys (B, H, L, d) of one layer, from its input."""
        mod = self.layers[layer]
        attn = mod.self_attn
        x = mod.input_layernorm(hidden_in)
        B, L, _ = x.shape
        d = attn.head_dim
        q = attn.q_proj(x).view(B, L, -1, d).transpose(1, 2)
        k = attn.k_proj(x).view(B, L, -1, d).transpose(1, 2)
        cos, sin = pe
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        return q, k.repeat_interleave(attn.num_key_value_groups, dim=1)

    # ---------------------------------------------------------------------------------------------- prefill
    def prefill(
        self,
        inputs: LMInputs,
        drops: Sequence[PrefillDrop] = (),
        evicts: Sequence[DecodeEvict] = (),
        use_cache: bool = False,
        biases: Sequence[AttentionBias] = (),
    ) -> PrefillResult:
        """Runs every decoder layer over the batch, applying ``drops`` at their layers and ``biases`` from theirs.

        ``evicts`` only split the layer groups here (so that their layers get their own cache layout).

        Raises:
            ValueError: a drop or eviction layer outside [1, num_layers - 1], a bias layer outside
                [0, num_layers - 1] (layer 0, every layer, only for a bias that records no earlier layer), or a drop
                after the first bias layer (the bias refers to the slots at its layer).
        """
        for h in (*drops, *evicts):
            if not 0 < h.layer < self.num_layers:
                raise ValueError(f"hook layer {h.layer} must be in [1, {self.num_layers - 1}]")
        for h in biases:
            if not 0 <= h.layer < self.num_layers or any(not 0 <= r < h.layer for r in h.record_inputs):
                raise ValueError(f"bias layer {h.layer} must be in [0, {self.num_layers - 1}] and record only "
                                 f"earlier layers, got record_inputs={tuple(h.record_inputs)}")
        bias_by_layer: dict[int, list[AttentionBias]] = {}
        for h in biases:
            bias_by_layer.setdefault(h.layer, []).append(h)
        if bias_by_layer and any(d.layer > min(bias_by_layer) for d in drops):
            raise ValueError(f"an AttentionBias from layer {min(bias_by_layer)} cannot be combined with a "
                             "PrefillDrop at a later layer (the bias is laid out over the slots at its own layer)")
        state = SeqState(inputs.embeds, inputs.valid, inputs.positions, inputs.next_position,
                         inputs.segment, inputs.visual_index, inputs.labels)
        by_layer: dict[int, list[PrefillDrop]] = {}
        for d in drops:
            by_layer.setdefault(d.layer, []).append(d)
        boundaries = sorted({0, *by_layer, *(e.layer for e in evicts)})
        record = {r for h in (*drops, *biases) for r in h.record_inputs}
        cache = KVCache(self.num_layers) if use_cache else None
        B = state.hidden.shape[0]
        per_layer = torch.zeros(B, self.num_layers, dtype=torch.long, device=state.hidden.device)
        recorded: dict[int, tuple[Tensor, tuple[Tensor, Tensor], SeqState]] = {}
        groups: list[_Group] = []

        pe = self._rotary(state.hidden, state.positions)
        mask = self._mask(causal_mask(state.valid), state.hidden.dtype)
        active_bias: Tensor | None = None
        key_bias: Tensor | None = None  # (B, L): the per-key biases, carried in the keys (key_bias_attention)
        layer_kwargs: dict[str, Tensor] = {}
        eager, implementation = self._eager, self.config._attn_implementation
        if any(h.per_key for h in biases) and not eager:
            # The attention function for this call's layers only: HF's SDPA, taking the ``key_bias`` keyword.
            self.config._attn_implementation = KEY_BIAS_ATTENTION
        try:
            for layer_idx, layer in enumerate(self.layers):
                if layer_idx in by_layer:
                    for drop in by_layer[layer_idx]:
                        ctx = PrefillContext(self, state, recorded, layer_idx)
                        edit = drop.select(ctx)
                        state = apply_edit(state, edit if isinstance(edit, LayerEdit) else LayerEdit(keep=edit),
                                           drop.positions)
                    pe = self._rotary(state.hidden, state.positions)
                    mask = self._mask(causal_mask(state.valid), state.hidden.dtype)
                if layer_idx in bias_by_layer:
                    L = state.valid.shape[1]
                    for hook in bias_by_layer[layer_idx]:
                        b = hook.bias(PrefillContext(self, state, recorded, layer_idx))
                        shape = (B, L) if hook.per_key else (B, L, L)
                        if b.shape != shape:
                            raise ValueError(f"AttentionBias at layer {layer_idx} returned shape {tuple(b.shape)}, "
                                             f"expected {shape}")
                        if hook.per_key:
                            key_bias = b if key_bias is None else key_bias + b
                        else:
                            active_bias = b if active_bias is None else active_bias + b
                    if active_bias is not None or eager:  # a full bias or eager attention: one float mask holds all
                        full = active_bias
                        if key_bias is not None:
                            row = key_bias[:, None, :].expand(B, L, L)
                            full = row if full is None else full + row
                        mask, layer_kwargs = self._mask(causal_mask(state.valid), state.hidden.dtype, full), {}
                    else:  # per-key biases alone: the boolean mask, and the bias rides in the keys
                        mask, layer_kwargs = causal_mask(state.valid), {"key_bias": key_bias}
                if layer_idx in boundaries:
                    end = next((b for b in boundaries if b > layer_idx), self.num_layers)
                    groups.append(_Group(layer_idx, end, state.valid, state.segment, state.visual_index,
                                         state.next_position, state.mrope))
                per_layer[:, layer_idx] = ((state.segment == VISUAL) & state.valid).sum(dim=1)
                if layer_idx in record:
                    recorded[layer_idx] = (state.hidden, pe, state)
                state.hidden = layer(
                    state.hidden,
                    attention_mask=mask,
                    position_embeddings=pe,
                    past_key_values=cache,
                    use_cache=use_cache,
                    **layer_kwargs,
                )
        finally:
            self.config._attn_implementation = implementation
        hidden = self.text_model.norm(state.hidden)
        return PrefillResult(hidden, state, per_layer, cache, groups)

    # ----------------------------------------------------------------------------------------------- decode
    def decode_step(
        self,
        embeds: Tensor,
        step: int,
        result: PrefillResult,
        evicts: Sequence[DecodeEvict] = (),
    ) -> Tensor:
        """Runs one new token per sample, (B, 1, D) -> next-token logits (B, V), updating the cache in place.

        The new token of step ``step`` (0 = the first generated token) takes position ``next_position + step``
        in every layer group.
        """
        by_layer = {e.layer: e for e in evicts}
        record = {r for e in evicts for r in e.record_inputs}
        step_inputs: dict[int, tuple[Tensor, tuple[Tensor, Tensor], _Group]] = {}
        h = embeds
        B = h.shape[0]
        for g in result.groups:
            if g.start in by_layer:
                ctx = DecodeContext(self, result, step_inputs, g, step)
                keep = by_layer[g.start].select(ctx)
                if keep is not None:
                    self._evict(result, g, keep)
            pos = (g.next_position + step)[:, None]
            if g.mrope:
                pos = pos[None].expand(3, -1, -1)
            pe = self._rotary(h, pos)
            allowed = torch.cat([g.valid, torch.ones(B, 1, dtype=torch.bool, device=h.device)], dim=1)
            mask = self._mask(allowed[:, None, None, :], h.dtype)
            for layer_idx in range(g.start, g.end):
                if layer_idx in record:
                    step_inputs[layer_idx] = (h, pe, g)
                h = self.layers[layer_idx](h, attention_mask=mask, position_embeddings=pe,
                                           past_key_values=result.cache, use_cache=True)
            g.valid = allowed
            g.segment = torch.cat([g.segment, g.segment.new_full((B, 1), GENERATED)], dim=1)
            g.visual_index = torch.cat([g.visual_index, g.visual_index.new_full((B, 1), -1)], dim=1)
        return self.logits(self.text_model.norm(h))[:, -1]

    def _evict(self, result: PrefillResult, first: _Group, keep: Tensor) -> None:
        """Applies a decode-time keep mask to ``first`` and every later group (same slot layout required)."""
        for g in result.groups:
            if g.start < first.start:
                continue
            if g.valid.shape != keep.shape:
                raise ValueError("decode eviction across layer groups with different cache layouts")
            k = keep | (g.segment != VISUAL)
            k = k & g.valid
            index, valid = compact_index(k)
            for layer_idx in range(g.start, g.end):
                result.cache.select(layer_idx, index)
            g.valid = valid
            g.segment = torch.where(valid, torch.gather(g.segment, 1, index), torch.zeros_like(index, dtype=torch.int8))
            g.visual_index = torch.where(valid, torch.gather(g.visual_index, 1, index), -1)

    # -------------------------------------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(
        self,
        inputs: LMInputs,
        max_new_tokens: int,
        eos_token_id: int | Sequence[int] | None,
        pad_token_id: int,
        drops: Sequence[PrefillDrop] = (),
        evicts: Sequence[DecodeEvict] = (),
    ) -> GenerationResult:
        """Greedy decoding with a KV cache. Stops when every sample has produced an EOS or after
        ``max_new_tokens``; matches HF ``generate(do_sample=False)`` on unpruned inputs."""
        eos = torch.tensor(
            [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)),
            device=inputs.embeds.device, dtype=torch.long)
        result = self.prefill(inputs, drops, evicts, use_cache=True)
        logits = self.logits(result.hidden[:, -1])
        B = logits.shape[0]
        finished = torch.zeros(B, dtype=torch.bool, device=logits.device)
        out = []
        for step in range(max_new_tokens):
            nxt = logits.argmax(dim=-1)
            nxt = torch.where(finished, torch.full_like(nxt, pad_token_id), nxt)
            out.append(nxt)
            finished = finished | torch.isin(nxt, eos)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            logits = self.decode_step(self.embed(nxt)[:, None], step, result, evicts)
        tokens = torch.stack(out, dim=1) if out else torch.zeros(B, 0, dtype=torch.long, device=logits.device)
        cached = torch.zeros_like(result.visual_per_layer)
        for g in result.groups:
            for layer_idx in range(g.start, g.end):
                cached[:, layer_idx] = ((g.segment == VISUAL) & g.valid).sum(dim=1)
        last = result.groups[-1]
        final = [last.visual_index[b][(last.segment[b] == VISUAL) & last.valid[b]].tolist() for b in range(B)]
        return GenerationResult(tokens, result.visual_per_layer, cached, final, result.hidden.shape[1])


class PrefillContext:
    """What a :class:`PrefillDrop` sees at its layer.

    Attributes:
        state: the sequence entering the layer (hidden states, masks, positions, segments).
        layer: the layer index.
    """

    def __init__(self, runner: LLMRunner, state: SeqState, recorded: dict, layer: int):
        self.runner, self.state, self._recorded, self.layer = runner, state, recorded, layer

    def _input(self, layer: int):
        if layer not in self._recorded:
            raise KeyError(f"layer {layer}'s input was not recorded; add it to the hook's record_inputs")
        return self._recorded[layer]

    def layer_input(self, layer: int) -> tuple[Tensor, SeqState]:
        """The hidden states (B, L_l, D) that entered ``layer`` and the sequence metadata at that layer."""
        h, _, st = self._input(layer)
        return h, st

    def attention_rows(self, layer: int, query_slots: Tensor) -> Tensor:
        """Post-softmax attention of ``layer`` for query slots (B, q) over all its slots: (B, H, q, L_l), fp32.

        Recomputed from the layer's recorded input with its own norm, projections and RoPE (causal, padding
        masked), so the model itself never needs eager attention.
        """
        h, pe, st = self._input(layer)
        return self._rows(layer, h, pe, st.valid, query_slots)

    def current_attention_rows(self, query_slots: Tensor, layer: int | None = None) -> Tensor:
        """Post-softmax attention rows that ``layer`` (default: this hook's layer) would compute on the *current*
        state — the hidden states entering the hook's layer, after any earlier hook at this layer — with that
        layer's own norm, projections and RoPE at the current positions: (B, H, q, L), fp32.

        This is PyramidDrop's score (rank with the *next* layer's projections before it runs); it needs no
        ``record_inputs`` because the state is at hand.

        Args:
            query_slots: (B, q) long, slots of the current state used as queries.
            layer: whose projections to use; the hook's own layer when None.
        """
        layer = self.layer if layer is None else layer
        st = self.state
        pe = self.runner._rotary(st.hidden, st.positions)
        return self._rows(layer, st.hidden, pe, st.valid, query_slots)

    def _rows(self, layer: int, hidden: Tensor, pe: tuple[Tensor, Tensor], valid: Tensor,
              query_slots: Tensor) -> Tensor:
        """Causal, padding-masked softmax rows of ``layer`` on ``hidden`` (B, L, D) for ``query_slots`` (B, q)."""
        q, k = self.runner._query_key(layer, hidden, pe)
        qi = query_slots[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1])
        q = torch.gather(q, 2, qi)
        scale = self.runner.layers[layer].self_attn.scaling
        logits = (q.float() @ k.float().transpose(-1, -2)) * scale  # (B, H, q, L)
        allowed = causal_mask(valid)[:, 0]  # (B, L, L)
        rows = torch.gather(allowed, 1, query_slots[..., None].expand(-1, -1, allowed.shape[-1]))
        logits = logits.masked_fill(~rows[:, None], float("-inf"))
        return logits.softmax(dim=-1)

    def keys(self, layer: int) -> Tensor:
        """Post-RoPE keys of ``layer`` (B, H, L_l, d), KV heads repeated to all query heads."""
        h, pe, _ = self._input(layer)
        return self.runner._query_key(layer, h, pe)[1]

    def final_norm(self, hidden: Tensor) -> Tensor:
        """The LLM's final norm applied to ``hidden`` (DART measures duplication in that space)."""
        return self.runner.text_model.norm(hidden)


class DecodeContext:
    """What a :class:`DecodeEvict` sees before its layer group runs at one generation step.

    Attributes:
        step: generation step (0 = the first fed-back token).
        group: the layer group whose caches may be evicted (``valid``, ``segment``, ``visual_index`` per slot).
    """

    def __init__(self, runner: LLMRunner, result: PrefillResult, step_inputs: dict, group: _Group, step: int):
        self.runner, self.result, self._inputs, self.group, self.step = runner, result, step_inputs, group, step

    def attention_row(self, layer: int) -> tuple[Tensor, _Group]:
        """The new token's post-softmax attention at ``layer`` over that layer's cache: (B, H, Lc), fp32,
        with the layer group describing those cache slots."""
        if layer not in self._inputs:
            raise KeyError(f"layer {layer}'s input was not recorded; add it to the hook's record_inputs")
        h, pe, g = self._inputs[layer]
        mod = self.runner.layers[layer]
        attn = mod.self_attn
        x = mod.input_layernorm(h)
        q = attn.q_proj(x).view(h.shape[0], 1, -1, attn.head_dim).transpose(1, 2)
        q = _apply_rope(q, *pe)
        k = self.result.cache.keys[layer].repeat_interleave(attn.num_key_value_groups, dim=1)
        logits = (q.float() @ k.float().transpose(-1, -2))[:, :, 0] * attn.scaling  # (B, H, Lc)
        valid = g.valid  # already extended by this step's token
        logits = logits.masked_fill(~valid[:, None], float("-inf"))
        return logits.softmax(dim=-1), g


def apply_edit(state: SeqState, edit: LayerEdit, positions: str) -> SeqState:
    """Applies a prefill :class:`LayerEdit`: keeps text and the chosen visual slots, inserts extra tokens after
    the last kept visual slot, re-pads on the left, and keeps or re-indexes the position ids."""
    keep = (edit.keep & (state.segment == VISUAL)) | ((state.segment != VISUAL) & (state.segment != PAD))
    keep = keep & state.valid
    B, L = keep.shape
    if edit.extra_hidden is None:
        rows = [k.nonzero().flatten() for k in keep]
        pool = state
    else:
        m = edit.extra_hidden.shape[1]
        ev = edit.extra_valid if edit.extra_valid is not None else torch.ones(B, m, dtype=torch.bool,
                                                                             device=keep.device)
        ex_pos = edit.extra_positions
        if ex_pos is None:
            ex_pos = torch.zeros((3, B, m) if state.mrope else (B, m), dtype=torch.long, device=keep.device)
        ex_idx = edit.extra_index if edit.extra_index is not None else torch.full(
            (B, m), -1, dtype=torch.long, device=keep.device)
        pool = SeqState(
            hidden=torch.cat([state.hidden, edit.extra_hidden.to(state.hidden.dtype)], dim=1),
            valid=torch.cat([state.valid, ev], dim=1),
            positions=torch.cat([state.positions, ex_pos], dim=-1),
            next_position=state.next_position,
            segment=torch.cat([state.segment, state.segment.new_full((B, m), VISUAL)], dim=1),
            visual_index=torch.cat([state.visual_index, ex_idx], dim=1),
            labels=None if state.labels is None else torch.cat(
                [state.labels, state.labels.new_full((B, m), -100)], dim=1),
        )
        rows = []
        for b in range(B):
            kept = keep[b].nonzero().flatten()
            cut = int((state.segment[b][kept] != SUFFIX).sum())
            extra = ev[b].nonzero().flatten() + L
            rows.append(torch.cat([kept[:cut], extra, kept[cut:]]))
    index, valid = compact_index(keep, rows)
    new = pool.gather(index, valid)
    if positions == "contiguous":
        count = valid.long().cumsum(dim=1) - 1
        pos = torch.where(valid, count, torch.zeros_like(count))
        new.positions = pos[None].expand(3, -1, -1).clone() if state.mrope else pos
        new.next_position = valid.sum(dim=1)
    elif positions != "keep":
        raise ValueError(f"positions must be 'keep' or 'contiguous', got {positions!r}")
    return new
