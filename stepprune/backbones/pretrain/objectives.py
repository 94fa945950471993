"""The vision-side objectives of backbone pretraining: a dense per-patch classifier on the LLM's visual tokens and
an image-level objective on CLS.

* :class:`PatchHeads` reads the projected visual tokens (what the LLM will see, ``(B, 576, D)``) and predicts what
  lies under each patch (:func:`~.targets.patch_targets`): kind, color, shape, size, word, the per-shape anchor
  the owner's box, the patch's silhouette and the owner's silhouette around it. Linear heads on purpose: the features must carry these facts *linearly*, which is what a
  small LLM can read with one attention lookup. This is the feasibility note's recommendation 1: it removes the
  "the LM must discover where to look" plateau because the tokens are meaningful before the LM is trained.
* :class:`ClsHeads` reads CLIP's pooled CLS output (post-layernorm of the last layer) and predicts which
  (color, shape) pairs are present and how many shapes there are. Without it, CLS would be untrained (the LLM
  never sees it) and the CLS attention that VisionZip / PruMerge / HoloV rank tokens by would be noise; with it,
  CLS must gather the objects, so its attention concentrates on them.

Both return a scalar loss and detached per-target diagnostics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stepprune.backbones.pretrain.targets import CONTEXT_DIM, IGNORE, MASK_CELLS, MAX_COUNT, N_COMBOS, PATCH_CLASSES

# Relative weights of the per-patch terms. The box is an L1 in [0, 1] units (small numbers), so it is scaled up
# to weigh about as much as a classification term.
# Shape and word are the slow, composite targets; they get double weight.
PATCH_WEIGHTS = {"kind": 1.0, "color": 1.0, "shape": 2.0, "size": 1.0, "word": 2.0, "anchor": 1.0, "box": 4.0,
                 "mask": 1.0, "context": 1.0}
_MASK = MASK_CELLS * MASK_CELLS
# Anchors are ~1 patch in 50; up-weighting the positives keeps the head from predicting "never".
ANCHOR_POS_WEIGHT = 10.0


def _masked_accuracy(logits: Tensor, target: Tensor) -> Tensor:
    keep = target != IGNORE
    if not bool(keep.any()):
        return torch.tensor(float("nan"))
    return (logits[keep].argmax(-1) == target[keep]).float().mean()


class PatchHeads(nn.Module):
    """Linear read-outs of per-patch ground truth from visual tokens.

    Args:
        dim: width of the visual tokens (the LLM width when applied after the projector).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.names = list(PATCH_CLASSES)
        self.sizes = [PATCH_CLASSES[k] for k in self.names]
        # classes, anchor logit, box (x0, y0, x1, y1), silhouette logits, context silhouette logits
        self.proj = nn.Linear(dim, sum(self.sizes) + 1 + 4 + _MASK + CONTEXT_DIM)

    def forward(self, tokens: Tensor) -> dict[str, Tensor]:
        """(B, N, D) tokens -> per-target outputs: logits (B, N, C_k), ``anchor`` (B, N) logits, ``box``
        (B, N, 4) in [0, 1], ``mask`` (B, N, 16) and ``context`` (B, N, 100) logits."""
        out = self.proj(self.norm(tokens))
        parts = torch.split(out, [*self.sizes, 1, 4, _MASK, CONTEXT_DIM], dim=-1)
        res = dict(zip(self.names, parts[:-4]))
        res["anchor"] = parts[-4].squeeze(-1)
        res["box"] = torch.sigmoid(parts[-3])
        res["mask"] = parts[-2]
        res["context"] = parts[-1]
        return res

    def loss(self, tokens: Tensor, targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Weighted sum of the per-patch terms and their diagnostics.

        Args:
            tokens: (B, N, D) visual tokens.
            targets: the batched :func:`~.targets.patch_targets` (class ids (B, N), ``anchor`` (B, N),
                ``box`` (B, N, 4), ``box_valid`` (B, N), ``mask`` (B, N, 16), ``context`` (B, N, 100)).
        """
        out = self.forward(tokens)
        terms: dict[str, Tensor] = {}
        metrics: dict[str, float] = {}
        for name in self.names:
            logits, target = out[name].float(), targets[name]
            if bool((target != IGNORE).any()):
                terms[name] = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE)
            metrics[f"acc_{name}"] = float(_masked_accuracy(logits.detach(), target))
        pos_weight = torch.tensor(ANCHOR_POS_WEIGHT, device=tokens.device)
        terms["anchor"] = F.binary_cross_entropy_with_logits(out["anchor"].float(), targets["anchor"],
                                                             pos_weight=pos_weight)
        valid = targets["box_valid"]
        if bool(valid.any()):
            terms["box"] = (out["box"].float()[valid] - targets["box"][valid]).abs().mean()
            metrics["box_l1_px"] = float(terms["box"].detach()) * 191
            terms["context"] = F.binary_cross_entropy_with_logits(out["context"].float()[valid],
                                                                  targets["context"][valid])
        terms["mask"] = F.binary_cross_entropy_with_logits(out["mask"].float(), targets["mask"])
        metrics["mask_l1"] = float((torch.sigmoid(out["mask"].detach()) - targets["mask"]).abs().mean())
        hit = (out["anchor"].detach() > 0) == (targets["anchor"] > 0.5)
        metrics["acc_anchor_pos"] = float(hit[targets["anchor"] > 0.5].float().mean()) if bool(
            (targets["anchor"] > 0.5).any()) else float("nan")
        loss = sum(PATCH_WEIGHTS[k] * v for k, v in terms.items())
        metrics.update({f"loss_{k}": float(v.detach()) for k, v in terms.items()})
        return loss, metrics


class ClsHeads(nn.Module):
    """Image-level read-outs from CLS: (color, shape) pairs present (multi-label) and the number of shapes.

    Args:
        dim: the vision tower's width.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, N_COMBOS + MAX_COUNT + 1)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D) pooled CLS -> combos logits (B, 48) and count logits (B, 21)."""
        out = self.proj(pooled)
        return out[:, :N_COMBOS], out[:, N_COMBOS:]

    def loss(self, pooled: Tensor, targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """BCE over the 48 pairs plus CE over the count, and their diagnostics."""
        combos, count = self.forward(pooled)
        l_combo = F.binary_cross_entropy_with_logits(combos.float(), targets["combos"])
        l_count = F.cross_entropy(count.float(), targets["n_objects"])
        metrics = {
            "loss_cls_combos": float(l_combo.detach()),
            "loss_cls_count": float(l_count.detach()),
            "acc_cls_combos": float(((combos.detach() > 0) == (targets["combos"] > 0.5)).float().mean()),
            "acc_cls_count": float((count.detach().argmax(-1) == targets["n_objects"]).float().mean()),
        }
        return l_combo + l_count, metrics


class SlotWordsHead(nn.Module):
    """Read-out of the words a question names its object by, from its answer-predicting slot's hidden state.

    The stage-2 term of :func:`~.steps.slot_words_loss` puts it on the input of the grounding layer, where the
    answer slot's query must hold the whole description for the lookup to single out the named object.

    Args:
        dim: the LLM's width.
        vocab: the LLM's vocabulary size (the targets are token ids).
    """

    def __init__(self, dim: int, vocab: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, vocab)

    def forward(self, hidden: Tensor) -> Tensor:
        """(Q, D) slot hidden states -> (Q, V) logits over the named words' token ids."""
        return self.proj(self.norm(hidden))
