"""FastV — "An Image is Worth 1/2 Tokens After Layer 2" (ECCV'24), training-free, inside the LLM.

Algorithm (design card §1): with K the first layer that sees the pruned sequence,

1. take decoder layer K-1's post-softmax causal attention (RoPE applied) of the **last prefill position** only
   (the last prompt token; left padding puts it at slot L-1 for every sample) and average it over heads;
2. score each image token j by that row's entry s_j; keep the top-R image tokens (ties: ``torch.topk``);
3. keep all text, restore spatial order, keep the **original position ids** (gaps) and drop the rest from the
   hidden states entering layer K. Layers < K see every token; layers >= K see the kept subset.

Official code followed: ``pkunlp-icler/FastV`` (snapshot d165972),
``src/transformers/src/transformers/models/llama/modeling_llama.py`` (``FASTV_INPLACE``: top-R of
``mean_heads(attn[K-1])[-1, image]``, ``keep_indexs.sort()``, ``position_ids = keep_indexs``), its KV-cache variant
``modeling_llama_fastv_kvcache.py`` and the HF-LLaVA variant ``src/FastV/llava-hf/.../modeling_llama.py``
(``fastv_k``, ``fastv_r``).

Choices (the card's notes and divergences):

* **Prune once at prefill** (the KV-cache semantics): layers >= K cache only the kept tokens and every decoding
  step attends to that subset; decoding positions continue from the unpruned length. The in-place original
  supports no KV cache and, generating with ``use_cache=False``, re-selects the subset at every step from the
  then-last token; the FastV README says the cache variant diverges slightly from it. We do not re-select.
* **Budget**: ``budget`` keeps exactly that many image tokens from layer K on (the 192/128/64 convention of the
  SparseVLM/VisionZip/DART tables, K=2). ``ratio`` keeps ``max(1, int(ratio * N))`` (floor), whereas the HF
  variant's drop ratio r keeps ``round(N * (1 - r))``.
* The attention row is recomputed from layer K-1's recorded input (fp32 softmax) instead of running that layer
  eagerly; the model keeps SDPA. Batched: one score row per sample, top-R per sample (the official code is
  batch-1 only).
* No budget and no ratio: keep everything (no hook).
"""

from __future__ import annotations

import dataclasses

from stepprune.backbones.hooks import PrefillDrop
from stepprune.backbones.llm import PrefillContext
from stepprune.methods.base import SelectionContext
from stepprune.methods.in_llm import InLLMConfig, InLLMMethod, last_slot, topk_keep, visual_slots
from stepprune.methods.registry import register


@dataclasses.dataclass
class FastVConfig(InLLMConfig):
    """Config of ``fastv``.

    Attributes:
        k: the first decoder layer (0-based) that sees only the kept tokens; scores come from layer k-1.
    """

    k: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"FastVConfig: k must be an integer >= 1 (scores come from layer k-1), "
                             f"got {self.k!r}")


@register
class FastV(InLLMMethod):
    """FastV: keep the image tokens the last prompt token attends to most at layer K-1."""

    name = "fastv"
    config_class = FastVConfig
    uses_text = True  # implicitly: the query is the last prompt token, whose attention depends on the prompt

    def llm_hooks(self, ctx: SelectionContext) -> list[PrefillDrop]:
        cfg = self.config
        if cfg.budget is None and cfg.ratio is None:
            return []
        (k,) = self.map_layers(ctx, [cfg.k], lowest=1, highest_from_end=1, field="k")
        keep = [cfg.keep_count(n, b) for b, n in enumerate(self.num_tokens(ctx))]

        def select(pctx: PrefillContext):
            st = pctx.state
            rows = pctx.attention_rows(k - 1, last_slot(st))  # (B, H, 1, L)
            scores = rows.mean(dim=1)[:, 0]  # (B, L): mean over heads of the last position's row
            return topk_keep(scores, visual_slots(st), keep)

        return [PrefillDrop(k, select, record_inputs=(k - 1,), positions=self.hook_positions)]
