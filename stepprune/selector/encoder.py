"""The cross-modal input encoder, Eq. (3): image tokens and gated question embeddings under joint self-attention.

    H = E_theta([X W_in ; alpha(step) * T W_t]),   E_theta = LN_f o B_L o ... o B_1,   H_v = H[:N]

* Each block B is pre-norm: h' = h + MHSA(LN_1(h)), out = h' + MLP(LN_2(h')), MLP d -> 4d -> d with GELU.
* **Bidirectional** by default, with a key-padding mask over padded image rows (variable N, Qwen2.5-VL) and padded
  question tokens; ``causal=True`` adds a causal mask over [image ; text] (the Table 4a ablation).
* **Input projection W_in** (documented choice): identity when d_tok == d (LLaVA at d = d_v = 1024, as the spec
  states), else a learned linear d_tok -> d. For Qwen2.5-VL the 4 pre-merger patch features of a merged token are
  concatenated (d_tok = 4 * 1280 = 5120) and projected, the first of the spec's two options.
* **W_t** (d_llm -> d, with bias) projects the frozen LLM embeddings of the instruction tokens into the selector
  space; alpha is the scheduled text gate (0 -> 1 over the first 10% of steps by default; 1 at inference).
* No positional embedding (the vision features already carry position); an optional learned 2-way modality
  embedding (default off).
* Optional ``input_norm`` (not in the spec): each visual token scaled to unit RMS (parameter-free) after W_in, so
  that the raw features' scale does not drown what the blocks add from the question.
* Optional ``text_attention="split"`` (not in the spec, whose joint softmax is ``"joint"``): every query reads the
  image keys and the question keys under two separate softmaxes and adds the two outputs. Under the joint softmax a
  question of L tokens gets about L / (N + L) of each patch's attention at init (3 % at N = 576, L = 20), so what a
  patch takes from the question is diluted before any word-patch match is learned; the split gives the question a
  full softmax of its own from step 0.
* Only the image positions are returned, after the final LayerNorm LN_f (memory rows at unit RMS, Sec. 7.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stepprune.selector.layers import FeedForward, merge_heads, split_heads


def split_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, n_img: int) -> Tensor:
    """Attention with one softmax over the first ``n_img`` keys and another over the rest, outputs added.

    Args:
        q, k, v: (B, H, L, d_h).
        allowed: bool mask broadcastable to (B, H, L, L).
        n_img: number of image positions (they come first).

    Returns:
        (B, H, L, d_h). A query with no allowed key in one part (a causal image row, a sample without question
        tokens) takes nothing from that part.
    """
    allowed = allowed.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = 0
    for part in (slice(0, n_img), slice(n_img, None)):
        mask = allowed[..., part]
        some = mask.any(-1, keepdim=True)
        # What SDPA makes of an all-masked row depends on the backend (0 on this CPU build; the softmax of a row
        # of -inf is NaN, in the output and in the backward, which a zeroed output does not stop). Such rows
        # attend everywhere instead, and their output is dropped.
        o = F.scaled_dot_product_attention(q, k[:, :, part], v[:, :, part], attn_mask=mask | ~some)
        out = out + torch.where(some, o, 0.0)
    return out


class EncoderBlock(nn.Module):
    """One pre-norm ViT block (self-attention + MLP)."""

    def __init__(self, d: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = FeedForward(d, mlp_ratio)

    def forward(self, h: Tensor, allowed: Tensor, n_img: int | None = None) -> Tensor:
        """(B, L, d) -> (B, L, d); ``allowed`` is a bool attention mask broadcastable to (B, H, L, L); with
        ``n_img`` the image keys (the first n_img) and the text keys get separate softmaxes
        (:func:`split_attention`)."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(self.ln_1(h)).chunk(3, dim=-1))
        if n_img is None:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        else:
            a = split_attention(q, k, v, allowed, n_img)
        h = h + self.proj(merge_heads(a))
        return h + self.mlp(self.ln_2(h))


class CrossModalEncoder(nn.Module):
    """E_theta of Eq. (3).

    Args:
        d_tok: width of one visual token row.
        d_llm: LLM embedding width (input of W_t).
        d: selector width.
        heads, mlp_ratio, layers: block shape and depth.
        project_input: learn W_in: d_tok -> d (required when d_tok != d).
        causal: causal instead of bidirectional attention (ablation).
        type_embedding: add a learned image/text type embedding.
        input_norm: scale each visual token to unit RMS after W_in.
        text_attention: ``"joint"`` (one softmax over image and text keys, the spec) or ``"split"`` (one each).
    """

    def __init__(self, d_tok: int, d_llm: int, d: int, heads: int, mlp_ratio: int = 4, layers: int = 2,
                 project_input: bool = False, causal: bool = False, type_embedding: bool = False,
                 input_norm: bool = False, text_attention: str = "joint"):
        super().__init__()
        if text_attention not in ("joint", "split"):
            raise ValueError(f"text_attention must be 'joint' or 'split', not {text_attention!r}")
        self.input_norm = input_norm
        self.split_text = text_attention == "split"
        if d_tok != d and not project_input:
            raise ValueError(f"visual tokens are {d_tok} wide but the selector is {d}: an input projection is needed")
        self.causal = causal
        self.input_proj = nn.Linear(d_tok, d) if project_input else nn.Identity()
        self.text_proj = nn.Linear(d_llm, d)  # W_t
        self.type_embed = nn.Parameter(torch.zeros(2, d)) if type_embedding else None
        self.blocks = nn.ModuleList(EncoderBlock(d, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, x: Tensor, x_mask: Tensor, text: Tensor, text_mask: Tensor, alpha: float | Tensor) -> Tensor:
        """Encodes one batch.

        Args:
            x: (B, N, d_tok) visual tokens (pre-projector).
            x_mask: (B, N) bool, valid visual rows.
            text: (B, Lq, d_llm) frozen LLM embeddings of the instruction tokens.
            text_mask: (B, Lq) bool, valid instruction tokens.
            alpha: the text gate.

        Returns:
            (B, N, d) the image positions of the encoded sequence, after LN_f.
        """
        dtype = self.text_proj.weight.dtype
        img = self.input_proj(x.to(dtype))
        if self.input_norm:  # padded rows are zeros and stay zeros
            img = F.rms_norm(img, (img.shape[-1],), eps=1e-6)
        txt = alpha * self.text_proj(text.to(dtype))
        if self.type_embed is not None:
            img, txt = img + self.type_embed[0], txt + self.type_embed[1]
        h = torch.cat([img, txt], dim=1)
        keys = torch.cat([x_mask, text_mask], dim=1).bool()  # (B, L)
        allowed = keys[:, None, None, :]
        if self.causal:
            L = h.shape[1]
            allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=h.device).tril()[None, None]
        n_img = x.shape[1] if self.split_text else None
        for block in self.blocks:
            h = block(h, allowed, n_img)
        return self.ln_f(h[:, : x.shape[1]])
