"""Pixels -> patches: per-element coverage of the 24x24 patch grid, evidence patches and complexity stats.

Patch index = ``row * 24 + col`` (row-major, 0..575), the order of LLaVA-1.5's 576 visual tokens.

Evidence rule for one element: the patches where its *visible* pixels (after occlusion) cover at least
:data:`~stepprune.data.synthvqa.vocab.EVIDENCE_MIN_COVERAGE` of the patch; if no patch reaches that (a tiny or
mostly hidden element), the single patch it covers most.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stepprune.data.synthvqa.vocab import EVIDENCE_MIN_COVERAGE, GRID, N_PATCHES, PATCH_SIZE

PATCH_PIXELS = PATCH_SIZE * PATCH_SIZE


def coverage(owner: np.ndarray, n_elements: int) -> np.ndarray:
    """Pixel counts per patch and owner.

    Args:
        owner: ``(192, 192)`` owner map (``-1`` background, else element id).
        n_elements: number of element ids in the scene.

    Returns:
        ``(576, n_elements + 1)`` int array; column 0 is background, column ``k + 1`` element ``k``.
    """
    # (row, py, col, px) -> (row, col, py, px): each patch's 64 pixels become contiguous.
    tiles = owner.reshape(GRID, PATCH_SIZE, GRID, PATCH_SIZE).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(N_PATCHES, PATCH_PIXELS)
    k = n_elements + 1
    flat = (np.arange(N_PATCHES)[:, None] * k + (tiles.astype(np.int64) + 1)).ravel()
    return np.bincount(flat, minlength=N_PATCHES * k).reshape(N_PATCHES, k)


def evidence_patches(counts: np.ndarray, element: int) -> list[int]:
    """Evidence patches of one element (module docstring rule), ascending; empty if nothing is visible."""
    col = counts[:, element + 1]
    idx = np.flatnonzero(col >= EVIDENCE_MIN_COVERAGE * PATCH_PIXELS)
    if idx.size == 0 and col.max() > 0:
        idx = np.array([int(col.argmax())])
    return [int(i) for i in idx]


@dataclasses.dataclass(frozen=True)
class ElementGeometry:
    """Where one element is visible.

    Attributes:
        pixels: visible pixel count.
        bbox: visible bounding box ``(x0, y0, x1, y1)``, inclusive.
        centroid: mean ``(x, y)`` of its visible pixels.
        patches: evidence patch indices.
    """

    pixels: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    patches: tuple[int, ...]


def element_geometry(owner: np.ndarray, counts: np.ndarray,
                     windows: list[tuple[int, int, int, int]]) -> list[ElementGeometry]:
    """Visible geometry of every element.

    Args:
        owner: the owner map.
        counts: :func:`coverage` of it.
        windows: per element id, a box ``(x0, y0, x1, y1)`` (exclusive ends) that contains all of its pixels;
            searching only there keeps this cheap for 20+ elements.
    """
    out = []
    for eid, (x0, y0, x1, y1) in enumerate(windows):
        ys, xs = np.nonzero(owner[y0:y1, x0:x1] == eid)
        if ys.size == 0:
            out.append(ElementGeometry(0, (-1, -1, -1, -1), (-1.0, -1.0), ()))
            continue
        ys, xs = ys + y0, xs + x0
        out.append(ElementGeometry(
            pixels=int(ys.size),
            bbox=(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())),
            centroid=(round(float(xs.mean()), 2), round(float(ys.mean()), 2)),
            patches=tuple(evidence_patches(counts, eid)),
        ))
    return out


def complexity_stats(counts: np.ndarray, n_objects: int, n_texts: int) -> dict[str, float | int]:
    """How busy an image is: element counts and the share of foreground patches and pixels.

    A patch counts as foreground when non-background pixels cover at least the evidence threshold of it.
    """
    fg = PATCH_PIXELS - counts[:, 0]
    return {
        "n_objects": n_objects,
        "n_texts": n_texts,
        "fg_patch_fraction": round(float((fg >= EVIDENCE_MIN_COVERAGE * PATCH_PIXELS).mean()), 4),
        "fg_pixel_fraction": round(float(fg.sum() / (N_PATCHES * PATCH_PIXELS)), 4),
    }


def patch_owner(counts: np.ndarray) -> np.ndarray:
    """``(576,)`` int: the element covering most of each patch, ``-1`` where background dominates.

    A dense per-patch label (with the scene's attribute tables: color / shape / size per patch) for staged
    pretraining of the vision side, as the tiny-backbone feasibility study recommends.
    """
    return counts.argmax(axis=1) - 1
