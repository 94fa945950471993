"""Controls every comparison needs: keep everything, keep nothing, keep a random or a spatially uniform subset, or
average-pool to the budget. All act before the LLM and are training-free.

* ``vanilla`` — all N visual tokens (the unpruned model).
* ``blind`` — no visual tokens at all (how much does the image matter?).
* ``random`` — K tokens drawn without replacement, seeded per sample from ``seed`` and the sample's key, so a
  sample gets the same subset whatever batch it is in; kept in raster order.
* ``uniform`` — the centre token of each of K cells that tile the token grid evenly (:func:`grid_cells`).
* ``pool`` — 2-D average pooling: the mean pre-projector feature of each of those K cells, then the frozen
  projector (for K = 64 on a 24x24 grid the cells are the 8x8 blocks of 3x3 patches). Each pooled token's
  "original" position is its cell's centre patch.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import torch
from torch import Tensor

from stepprune.backbones.types import VisualTokens
from stepprune.methods.base import MethodConfig, PruningMethod, SelectionContext
from stepprune.methods.registry import register
from stepprune.methods.token_rows import stack_rows


def grid_cells(rows: int, cols: int, k: int) -> tuple[Tensor, Tensor]:
    """Partitions a rows x cols token grid into exactly K rectangular cells spread evenly over it.

    The grid is cut into r ~ sqrt(K * rows / cols) horizontal strips, K is spread over the strips as evenly as
    possible, and each strip is cut into that many column ranges (row ``y`` belongs to strip ``y * r // rows``).

    Returns:
        cell: (rows * cols,) long, the cell id in [0, K) of each raster-order token.
        centre: (K,) long, the raster index of the token at each cell's centre (sorted by cell id).
    """
    if not 0 < k <= rows * cols:
        raise ValueError(f"cannot cut a {rows}x{cols} grid into {k} cells")
    r = max(1, min(rows, round(math.sqrt(k * rows / cols))))
    r = max(r, math.ceil(k / cols))  # no strip may need more cells than it has columns
    per_strip = [k // r + (1 if i < k % r else 0) for i in range(r)]
    strip_of_row = [y * r // rows for y in range(rows)]
    cell = torch.empty(rows * cols, dtype=torch.long)
    centre = []
    first = 0
    for i, m in enumerate(per_strip):
        strip_rows = [y for y in range(rows) if strip_of_row[y] == i]
        cell_of_col = [x * m // cols for x in range(cols)]
        mid_row = strip_rows[len(strip_rows) // 2]
        for j in range(m):
            cell_cols = [x for x in range(cols) if cell_of_col[x] == j]
            centre.append(mid_row * cols + cell_cols[len(cell_cols) // 2])
        for y in strip_rows:
            for x in range(cols):
                cell[y * cols + x] = first + cell_of_col[x]
        first += m
    return cell, torch.tensor(centre, dtype=torch.long)


def lattice_indices(rows: int, cols: int, k: int) -> Tensor:
    """K raster indices spread evenly over a rows x cols grid: the centres of :func:`grid_cells` (sorted)."""
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    return grid_cells(rows, cols, k)[1].sort().values


@dataclasses.dataclass
class KeepAllConfig(MethodConfig):
    """Config of ``vanilla`` and ``blind``: no budget."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.budget is not None or self.ratio is not None:
            raise ValueError(f"{type(self).__name__}: this control takes no budget or ratio")


@register
class Vanilla(PruningMethod):
    """Keeps every visual token: the unpruned model."""

    name = "vanilla"
    config_class = KeepAllConfig
    budgeted = False


@register
class Blind(PruningMethod):
    """Keeps no visual token: the LLM answers from the text alone."""

    name = "blind"
    config_class = KeepAllConfig
    hook_point = "pre_llm"
    budgeted = False

    def select(self, ctx: SelectionContext) -> VisualTokens:
        proj = ctx.projected()
        B = proj.shape[0]
        return VisualTokens(proj[:, :0], torch.zeros(B, 0, dtype=torch.long, device=proj.device),
                            torch.zeros(B, dtype=torch.long, device=proj.device))


def sample_generator(seed: int, key: str) -> torch.Generator:
    """The generator ``random`` draws sample ``key``'s subset from: ``seed`` mixed with the key, so a sample gets
    the same draw whatever batch it is in."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))


@dataclasses.dataclass
class RandomConfig(MethodConfig):
    """Config of ``random``. ``seed`` is mixed with each sample's key."""

    seed: int = 0


class _IndexSelection(PruningMethod):
    """Pre-LLM selection of original tokens from one index list per sample (kept in raster order)."""

    hook_point = "pre_llm"

    def indices(self, ctx: SelectionContext, b: int, rows: int, cols: int, k: int) -> Tensor:
        """(k,) sorted raster indices kept for sample ``b`` with a rows x cols grid."""
        raise NotImplementedError

    def select(self, ctx: SelectionContext) -> VisualTokens:
        proj = ctx.projected()
        embeds, sources = [], []
        for b, (rows, cols) in enumerate(ctx.vision.grid.tolist()):
            idx = self.indices(ctx, b, rows, cols, self.config.keep_count(rows * cols, b)).to(proj.device)
            embeds.append(proj[b, idx])
            sources.append(idx)
        return stack_rows(embeds, sources)


@register
class RandomPrune(_IndexSelection):
    """Keeps a seeded random subset of K visual tokens per sample, in raster order."""

    name = "random"
    config_class = RandomConfig

    def indices(self, ctx: SelectionContext, b: int, rows: int, cols: int, k: int) -> Tensor:
        gen = sample_generator(self.config.seed, ctx.sample_key(b))
        return torch.randperm(rows * cols, generator=gen)[:k].sort().values


@register
class UniformPrune(_IndexSelection):
    """Keeps K tokens on an even 2-D lattice over the token grid."""

    name = "uniform"

    def indices(self, ctx: SelectionContext, b: int, rows: int, cols: int, k: int) -> Tensor:
        return lattice_indices(rows, cols, k)


@register
class PoolPrune(PruningMethod):
    """Average-pools the pre-projector features to K tokens on an r x c grid, then projects them."""

    name = "pool"
    hook_point = "pre_llm"

    def select(self, ctx: SelectionContext) -> VisualTokens:
        tokens = ctx.vision.tokens
        feats, sources = [], []
        for b, (rows, cols) in enumerate(ctx.vision.grid.tolist()):
            k = self.config.keep_count(rows * cols, b)
            cell, centre = grid_cells(rows, cols, k)
            cell = cell.to(tokens.device)
            x = tokens[b, : rows * cols].float()
            sums = torch.zeros(k, x.shape[-1], device=tokens.device).index_add_(0, cell, x)
            sizes = torch.bincount(cell, minlength=k).clamp(min=1)
            feats.append((sums / sizes[:, None]).to(tokens.dtype))
            sources.append(centre.to(tokens.device))
        out = stack_rows(feats, sources)  # pre-projector rows; the frozen projector maps them to LLM space
        return VisualTokens(ctx.adapter.project(out.embeds), out.source_index, out.count)
