"""Cost models of the in-LLM baselines (FastV, SparseVLM, PyramidDrop, DART): their token schedules through the
LLM's layers, from each method's own layer mapping and stage rules, and their scoring work, run by the runner's
own attention-row and key recomputation (:class:`~stepprune.backbones.llm.PrefillContext`) at the shapes the
schedule gives.

As implemented, an attention row recomputes the scored layer's q and k projections over the whole sequence at that
layer (``LLMRunner._query_key``), so e.g. FastV at LLaVA-1.5-7B spends ~43 GFLOPs on its one row (2 x 636 x 4096^2
x 2); projecting only the query rows needed would halve that. Counted as it runs.
"""

from __future__ import annotations

import torch

from stepprune.efficiency.costs.base import Geometry, MethodCost, cost_model
from stepprune.efficiency.scene import META, MetaScene
from stepprune.methods.in_llm import last_slot, merge_stages
from stepprune.methods.sparsevlm import RECYCLE_FRACTION, TOKENS_PER_CLUSTER, text_raters


def _drop_at(g: Geometry, k: int, kept: int) -> list[int]:
    """N tokens entering layers < k, ``kept`` from layer k on."""
    return [g.tokens] * k + [min(kept, g.tokens)] * (g.depth - k)


@cost_model("fastv")
def fastv(method, g: Geometry, k=None) -> MethodCost:
    """One attention row (the last prompt token) of layer K-1 over the full sequence; drop before layer K."""
    cfg = method.config
    if cfg.budget is None and cfg.ratio is None:
        return MethodCost(g.tokens, [g.tokens] * g.depth, g.tokens)
    ctx = g.context()
    (layer,) = method.map_layers(ctx, [cfg.k], lowest=1, highest_from_end=1, field="k")

    def overhead(scene: MetaScene) -> None:
        pctx = scene.prefill_context(layer, g.tokens, {layer - 1: g.tokens})
        pctx.attention_rows(layer - 1, last_slot(pctx.state)).mean(dim=1)

    return MethodCost(g.tokens, _drop_at(g, layer, cfg.keep_count(g.tokens)), g.tokens, overhead)


def sparsevlm_schedule(method, g: Geometry) -> tuple[list[int], list[tuple[int, int]]]:
    """SparseVLM's visual tokens per layer (kept + recycled clusters after each stage) and, per stage, (scored
    layer, its visual tokens). A stage at layer l prunes l's output, i.e. the tokens entering l + 1."""
    cfg = method.config
    mapped = method.map_layers(g.context(), cfg.layers, lowest=0, highest_from_end=2, field="layers")
    counts = cfg.counts(g.tokens)
    stages = merge_stages(mapped)
    current, per_layer, scored = g.tokens, [], []
    for layer in range(g.depth):
        per_layer.append(current)
        if layer in stages:
            keep = counts[stages[layer]]
            if 0 < keep < current:  # otherwise the stage keeps everything (and scores nothing)
                scored.append((layer, current))
                dropped = current - keep
                clusters = int((int(dropped * RECYCLE_FRACTION) + 1) / TOKENS_PER_CLUSTER) + 1
                current = keep + (clusters if cfg.recycle else 0)
    return per_layer, scored


@cost_model("sparsevlm")
def sparsevlm(method, g: Geometry, k=None) -> MethodCost:
    """Per stage: the text raters from the input embeddings (image x text product) and the raters' attention rows
    at the scored layer; the raters are taken as half the suffix (their number depends on the embeddings). The
    DPC-kNN recycling (a ``cdist`` over ~0.3 of the dropped tokens) is not a matrix product and is not counted."""
    cfg = method.config
    if cfg.budget is None and cfg.ratio is None and cfg.schedule is None:
        return MethodCost(g.tokens, [g.tokens] * g.depth, g.tokens)
    per_layer, scored = sparsevlm_schedule(method, g)
    P, N = g.prompt.prefix, g.tokens
    raters = max(1, g.prompt.suffix // 2)

    def overhead(scene: MetaScene) -> None:
        for layer, visual in scored:
            pctx = scene.prefill_context(layer + 1, visual, {0: N, layer: visual})
            h0, _ = pctx.layer_input(0)
            for b in range(g.batch):
                text_raters(h0[b, P: P + N], h0[b, P + N:])
            slots = torch.zeros(g.batch, raters, dtype=torch.long, device=META)
            pctx.attention_rows(layer, slots).mean(dim=1)

    return MethodCost(N, per_layer, N, overhead)


def pdrop_schedule(method, g: Geometry) -> tuple[list[int], list[tuple[int, int]]]:
    """PyramidDrop's visual tokens per layer and, per boundary, (its layer, the visual tokens it ranks)."""
    cfg = method.config
    ctx = g.context()
    mapped = method.map_layers(ctx, cfg.boundaries, lowest=1, highest_from_end=1, field="layers")
    ratios = method.stage_ratios(ctx)[0]
    stages = merge_stages(mapped)
    current, per_layer, scored = g.tokens, [], []
    for layer in range(g.depth):
        if layer in stages:
            scored.append((layer, current))
            current = min(current, int(g.tokens * ratios[stages[layer]]))  # top-k keeps at most what is there
        per_layer.append(current)
    return per_layer, scored


@cost_model("pdrop")
def pdrop(method, g: Geometry, k=None) -> MethodCost:
    """At each boundary, the last instruction token's attention row with that layer's own projections over the
    current sequence."""
    cfg = method.config
    if cfg.budget is None and cfg.ratio is None and cfg.lam is None and cfg.ratios is None:
        return MethodCost(g.tokens, [g.tokens] * g.depth, g.tokens)
    per_layer, scored = pdrop_schedule(method, g)

    def overhead(scene: MetaScene) -> None:
        for layer, visual in scored:
            pctx = scene.prefill_context(layer, visual)
            pctx.current_attention_rows(last_slot(pctx.state)).mean(dim=1)

    return MethodCost(g.tokens, per_layer, g.tokens, overhead)


def dart_kept(method, g: Geometry) -> int:
    """DART's kept image tokens: the image pivots plus up to T = budget // pivots per pivot (each pivot takes its
    T least-similar candidates while any are left)."""
    cfg = method.config
    per_pivot = cfg.keep_count(g.tokens) // (cfg.pivot_image_tokens + cfg.pivot_text_tokens)
    image_pivots = min(cfg.pivot_image_tokens, g.tokens)
    candidates, kept = g.tokens - image_pivots, image_pivots
    for _ in range(image_pivots + min(cfg.pivot_text_tokens, g.prompt.suffix)):
        take = min(per_pivot, candidates) if per_pivot > 0 else 0
        kept, candidates = kept + take, candidates - take
    return kept


@cost_model("dart")
def dart(method, g: Geometry, k=None) -> MethodCost:
    """Layer K-1's keys over the full sequence (their L1 norms pick the pivots) and the final norm of the hidden
    states entering layer K; the cosine similarities are elementwise (not counted)."""
    cfg = method.config
    if cfg.budget is None and cfg.ratio is None:
        return MethodCost(g.tokens, [g.tokens] * g.depth, g.tokens)
    (layer,) = method.map_layers(g.context(), [cfg.k], lowest=1, highest_from_end=1, field="k")

    def overhead(scene: MetaScene) -> None:
        pctx = scene.prefill_context(layer, g.tokens, {layer - 1: g.tokens})
        pctx.keys(layer - 1)
        pctx.final_norm(pctx.state.hidden)

    return MethodCost(g.tokens, _drop_at(g, layer, dart_kept(method, g)), g.tokens, overhead)
