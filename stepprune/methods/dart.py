"""DART — "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters More"
(EMNLP'25), training-free, inside the LLM, once before layer K.

Algorithm (design card §6), per sample, with B the budget and P = 4 + 4 pivots:

1. **Pivots** from decoder layer K-1's post-RoPE keys (GQA heads repeated, all heads concatenated): the L1 norm
   of each token's key; pivots = the top-4 image tokens and the top-4 text tokens after the image.
2. **Duplication**: ``h`` = the LLM's *final* norm applied to the hidden states entering layer K. Candidates =
   image tokens minus the image pivots. For each pivot p in turn, the ``T = B // P`` candidates with the lowest
   cosine similarity to ``h_p`` join the keep set and leave the candidates.
3. Kept image tokens = image pivots + the chosen ones (**B + 4** when B is a multiple of 8), spatial order,
   **original position ids** (gaps), dropped from the hidden states entering layer K.

Official code followed: ``ZichenWen1/DART`` is not retrievable here; the card's sources are the llmc port by the
same group ``ModelTC/llmc: llmc/compression/token_reduction/dart.py`` + ``configs/.../DART/dart.yml``
(``pruning_loc=2``, 4 + 4 pivots, ``TOKEN_TOPK = ceil(B // (P_img + P_txt))``, ``self.model.model.model.norm``)
and VisionSelector's Qwen2.5-VL port ``qwen-evaluation/token_compression/dart.py`` (``get_retained_image_token``).

Choices:

* **Pivot order** ([unverified] in the card — "Python set of ints ~ ascending"): the official code iterates
  ``list(set(image_pivots + text_pivots))`` of the pivots' sequence indices. We build exactly that Python set of
  each sample's *unpadded* sequence indices and iterate it, so the greedy order equals the official one on the
  same sequence (CPython orders small-int sets by index modulo the table size: ascending only when every index is
  below it).
* ``T = keep_count(N) // 8`` for ``budget`` and ``ratio`` alike (llmc: ``ceil(B // 8)`` = ``B // 8``; the
  VisionSelector Qwen port's ``max(1, int(N * ratio / 8))`` agrees except below 8 tokens, where we keep only the
  image pivots as llmc does). With fewer candidates left than T, a pivot takes what is left.
* Text pivots = the text tokens after the image (Qwen2.5-VL: from ``<|vision_end|>`` on), at most 4.
* Cosine similarity in fp32 (``torch.nn.functional.cosine_similarity``, eps 1e-8). Keys/attention need no
  eager attention: they are recomputed from layer K-1's recorded input.
* No budget and no ratio: keep everything (no hook).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from stepprune.backbones.hooks import PrefillDrop
from stepprune.backbones.llm import PrefillContext
from stepprune.methods.base import SelectionContext
from stepprune.methods.in_llm import InLLMConfig, InLLMMethod, suffix_slots, visual_slots
from stepprune.methods.registry import register


@dataclasses.dataclass
class DARTConfig(InLLMConfig):
    """Config of ``dart``.

    Attributes:
        k: the first decoder layer (0-based) that sees only the kept tokens; keys come from layer k-1.
        pivot_image_tokens: image pivots (top L1 key norm).
        pivot_text_tokens: text pivots (top L1 key norm among the tokens after the image).
    """

    k: int = 2
    pivot_image_tokens: int = 4
    pivot_text_tokens: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("k", "pivot_image_tokens", "pivot_text_tokens"):
            v = getattr(self, name)
            lowest = 1 if name == "k" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
                raise ValueError(f"DARTConfig: {name} must be an integer >= {lowest}, got {v!r}")
        if self.pivot_image_tokens + self.pivot_text_tokens == 0:
            raise ValueError("DARTConfig: at least one pivot is needed")


def dart_keep(
    key_l1: Tensor,
    normed: Tensor,
    image: Tensor,
    text: Tensor,
    per_pivot: int,
    pivots_image: int,
    pivots_text: int,
    offset: int = 0,
) -> tuple[Tensor, list[int]]:
    """One sample's DART selection.

    Args:
        key_l1: (L,) L1 norm of each slot's concatenated post-RoPE keys at layer K-1.
        normed: (L, D) final-norm hidden states entering layer K.
        image: (n,) long, the image slots (ascending).
        text: (m,) long, the text slots after the image.
        per_pivot: T, candidates each pivot keeps.
        pivots_image / pivots_text: pivot counts.
        offset: padding slots before the sequence (slot - offset = the official unpadded index).

    Returns:
        The kept image slots (ascending) and the pivot slots in the order they were used.
    """
    img_piv = image[key_l1[image].topk(min(pivots_image, image.numel())).indices]
    txt_piv = text[key_l1[text].topk(min(pivots_text, text.numel())).indices]
    # The official loop runs over list(set(image_pivots + text_pivots)) of unpadded sequence indices.
    order = [i + offset for i in set((torch.cat([img_piv, txt_piv]) - offset).tolist())]
    cand = image[~torch.isin(image, img_piv)]
    chosen = [img_piv]
    x = normed.float()
    for p in order:
        if cand.numel() == 0 or per_pivot <= 0:
            break
        sim = F.cosine_similarity(x[p][None], x[cand], dim=-1)
        pick = (-sim).topk(min(per_pivot, cand.numel())).indices  # the least similar candidates
        chosen.append(cand[pick])
        cand = cand[~torch.isin(cand, cand[pick])]
    return torch.cat(chosen).sort().values, order


@register
class DART(InLLMMethod):
    """DART: keep the image tokens least duplicated by a few high-key-norm pivots."""

    name = "dart"
    config_class = DARTConfig
    uses_text = True  # text pivots

    def llm_hooks(self, ctx: SelectionContext) -> list[PrefillDrop]:
        cfg = self.config
        if cfg.budget is None and cfg.ratio is None:
            return []
        (k,) = self.map_layers(ctx, [cfg.k], lowest=1, highest_from_end=1, field="k")
        pivots = cfg.pivot_image_tokens + cfg.pivot_text_tokens
        per_pivot = [cfg.keep_count(n, b) // pivots for b, n in enumerate(self.num_tokens(ctx))]

        def select(pctx: PrefillContext):
            st = pctx.state
            keys = pctx.keys(k - 1)  # (B, H, L, d), post-RoPE, GQA-repeated
            key_l1 = keys.float().abs().sum(dim=(1, 3))  # (B, L): L1 norm of the head-concatenated key
            normed = pctx.final_norm(st.hidden)
            img, txt = visual_slots(st), suffix_slots(st)
            keep = torch.zeros_like(img)
            L = st.valid.shape[1]
            for b in range(st.valid.shape[0]):
                kept, _ = dart_keep(key_l1[b], normed[b], img[b].nonzero().flatten(), txt[b].nonzero().flatten(),
                                    per_pivot[b], cfg.pivot_image_tokens, cfg.pivot_text_tokens,
                                    offset=L - int(st.valid[b].sum()))
                keep[b, kept] = True
            return keep

        return [PrefillDrop(k, select, record_inputs=(k - 1,), positions=self.hook_positions)]
