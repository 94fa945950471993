"""PruMerge+ (``prumerge_plus``): PruMerge plus a spatially uniform supplement of tokens, then the same merge and
extra token (see :mod:`stepprune.methods.prumerge` for the score, the merge, the extra token, the Qwen2.5-VL port
and the shared decisions).

Follows ``42Shawn/LLaVA-PruMerge`` (snapshot 097c041) ``llava/model/multimodal_encoder/clip_encoder.py``
``token_prune_merge_advanced_plus`` (L174-285, the variant the official ``forward`` runs), and for a fixed budget
``JulietChoo/VisionSelector`` ``qwen-evaluation/token_compression/prumerge.py`` (L219-260). Selection per image:

* **Adaptive** (default): the IQR outliers' top ``k = int(N r)`` by score (score-descending), then the indices
  ``0, s, 2s, ... < N - 1`` with ``s = int(int(1 / r) / 3)`` that are not already kept, in index order.
* **Fixed budget** B (VisionSelector port): with ``k_iqr = max(1, int(N r))``, if the tokens to select exceed
  ``k_iqr``: the top ``k_iqr`` by score, then the uniform grid ``0, s', 2s', ... < N`` with ``s' = max(1, N // B)``
  minus those, in index order, truncated to fill B; otherwise plain top-B.

Decisions where the card or the code leaves a detail open:

* The official grid stops before the hard-coded 575 (= N - 1 at 576 tokens); generalised as ``< N - 1``.
* ``s = max(1, ...)``: the official step is 0 (an error) once more than a third of the tokens are outliers; and
  with no outlier at all the ratio used for the step is ``1 / N`` (the one token kept), where the official code
  divides by zero.
* With the extra token and ``exact_budget`` the budget rule runs with B-1 in place of B (so exactly B tokens
  reach the LLM), including the grid stride ``N // (B - 1)``.
* The port's random top-up when the grid runs short is unreachable (the grid has at least B entries, at most
  ``k_iqr`` of them already kept); it is an error here rather than a random draw.

Keep-all: as for PruMerge, not an identity while the merge is on; ``budget=N, neighbours=0, extra_token=False,
order="spatial"`` hands the LLM exactly the vanilla tokens (the grid with stride 1 fills in every token).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stepprune.methods.prumerge import PruMerge, adaptive_keep
from stepprune.methods.registry import register


def uniform_supplement(top: Tensor, n: int, step: int, stop: int) -> Tensor:
    """The grid ``0, step, 2 step, ... < stop`` without the indices already in ``top``, in grid order.

    Returns:
        (m,) long.
    """
    grid = torch.arange(0, stop, step, device=top.device)
    return grid[~torch.isin(grid, top)]


@register
class PruMergePlus(PruMerge):
    """PruMerge+: PruMerge's outliers plus a spatially uniform supplement, merged, + 1 extra token."""

    name = "prumerge_plus"

    def keep_indices(self, scores: Tensor, n: int, sample: int, extra: bool) -> Tensor:
        k_iqr, ratio = adaptive_keep(scores)
        if self.config.adaptive:
            top = scores.topk(k_iqr).indices
            ratio = ratio if ratio > 0 else k_iqr / n  # no outlier: step from the single kept token
            step = max(1, int(int(1 / ratio) / 3))
            return torch.cat([top, uniform_supplement(top, n, step, n - 1)])
        want = self.selected_count(n, sample, extra)
        if want <= k_iqr:
            return scores.topk(want).indices
        top = scores.topk(k_iqr).indices
        fill = uniform_supplement(top, n, max(1, n // want), n)[: want - k_iqr]
        if fill.numel() < want - k_iqr:  # cannot happen: the grid has >= want entries
            raise RuntimeError(f"sample {sample}: uniform grid too short to fill {want} tokens")
        return torch.cat([top, fill])
