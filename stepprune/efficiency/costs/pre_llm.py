"""Cost models of the pre-LLM baselines (PruMerge, PruMerge+, VisionZip, HoloV): their vision-side scores and
merges, run by the methods' own signal functions on the meta vision features.

Note that each call of ``vision.qk(layer)`` recomputes that CLIP layer's queries and keys (a LayerNorm and two
1024 x 1024 projections over 577 tokens, ~2.4 GFLOPs on LLaVA-1.5); the methods call it once for the scores and
once for the keys, and both are counted, as they run.
"""

from __future__ import annotations

import torch

from stepprune.efficiency.costs.base import Geometry, MethodCost, cost_model
from stepprune.efficiency.scene import META, MetaScene
from stepprune.methods import holov as holov_mod
from stepprune.methods import prumerge as prumerge_mod
from stepprune.methods import visionzip as visionzip_mod
from stepprune.methods.base import family_default
from stepprune.methods.vision_signals import cls_attention, received_attention, token_keys


def _attention_signal(scene: MetaScene, layer: int, reduce: str, over_queries: str) -> None:
    """CLS attention reduced over heads (LLaVA) or attention received (Qwen2.5-VL), as the methods compute it."""
    vision = scene.vision()
    if scene.family == "llava":
        a = cls_attention(vision, layer)
        a.sum(dim=1) if reduce == "sum" else a.mean(dim=1)
    else:
        received_attention(vision, layer, over_queries)


@cost_model("prumerge", "prumerge_plus")
def prumerge(method, g: Geometry, k=None) -> MethodCost:
    """Scores (single-head CLS attention / attention received), full-width keys, and each kept token's merge with
    its 32 nearest neighbours (:func:`~stepprune.methods.prumerge.merge_neighbours`, run as is). The PruMerge+
    supplement changes which tokens are kept, not how many."""
    cfg = method.config
    if cfg.adaptive:
        raise ValueError(f"{method.name}: the adaptive (IQR) count depends on the image; cost it with a budget")
    extra = family_default(cfg.extra_token, prumerge_mod.EXTRA_TOKEN, g.family, f"{method.name}: extra_token")
    space = family_default(cfg.merge_space, prumerge_mod.MERGE_SPACE, g.family, f"{method.name}: merge_space")
    selected = method.selected_count(g.tokens, 0, extra)
    visual = selected + int(extra)

    def overhead(scene: MetaScene) -> None:
        vision = scene.vision()
        scores = method.scores(vision, g.family)
        keys = token_keys(vision, cfg.layer, "concat", g.family)
        feats = vision.tokens if space == "vision" else scene.llm_rows(g.tokens)
        keep = torch.arange(selected, device=META)
        for b in range(g.batch):
            prumerge_mod.merge_neighbours(feats[b], keys[b], scores[b], keep, cfg.neighbours)

    return MethodCost.before_llm(g, visual, visual if space == "vision" else g.tokens, overhead)


@cost_model("visionzip")
def visionzip(method, g: Geometry, k=None) -> MethodCost:
    """Dominant scores and head-averaged keys of one vision layer, and the contextual assignment product
    (remaining non-targets x targets, the matmul inside :func:`~stepprune.methods.visionzip.contextual_tokens`,
    run at its shape)."""
    cfg = method.config
    llava = g.family == "llava"
    d, c = cfg.split(g.tokens, 0, g.family)
    layer = family_default(cfg.layer, visionzip_mod.LAYER, g.family, "visionzip: layer")
    rest = g.tokens - (d - 1 if llava else d)

    def overhead(scene: MetaScene) -> None:
        _attention_signal(scene, layer, "sum", "sum")
        metric = token_keys(scene.vision(), layer, "mean", g.family).float()
        if c:
            for b in range(g.batch):
                metric[b, : rest - c] @ metric[b, :c].T

    return MethodCost.before_llm(g, d + c, d + c if llava else g.tokens, overhead)


@cost_model("holov")
def holov(method, g: Geometry, k=None) -> MethodCost:
    """CLS attention (mean over heads) or attention received, every token projected, and the per-range cosine
    similarity of the projected features ((P, L, D) x (P, D, L), the padded layout of
    :func:`~stepprune.methods.holov.range_scores`)."""
    cfg = method.config
    kept = cfg.keep_count(g.tokens)
    layer = family_default(cfg.layer, holov_mod.LAYER, g.family, "holov: layer")
    sizes = holov_mod.range_sizes(g.tokens, cfg.ranges or holov_mod.num_ranges(g.tokens, kept))

    def overhead(scene: MetaScene) -> None:
        _attention_signal(scene, layer, "mean", "mean")
        rows = scene.llm_rows(int(sizes.max()))[0]
        f = rows.float()[None].expand(len(sizes), -1, -1)
        for _ in range(g.batch):
            f @ f.transpose(1, 2)

    return MethodCost.before_llm(g, kept, g.tokens, overhead)
