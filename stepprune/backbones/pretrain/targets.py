"""Ground-truth targets for the vision-side objectives, read off a SynthVQA sample's exact owner map.

Per patch (576 of them, raster order ``row * 24 + col``) — *what lies under the patch*:

* ``kind``: 0 background, 1 shape, 2 word;
* ``color``: the owner's palette color (shapes and words; -100 on background);
* ``shape`` / ``size``: the owner's shape and size class (shapes only; -100 elsewhere);
* ``word``: the owner's word (words only; -100 elsewhere);
* ``anchor``: 1 on exactly one patch per visible shape (the patch it owns nearest its visible centroid), so a
  count of shapes is a count of anchor patches;
* ``box``: the owner's visible bounding box ``(x0, y0, x1, y1) / 192`` (with ``box_valid`` marking foreground
  patches): where the object is, which relation, localisation and "closest to the edge" questions need;
* ``mask``: the patch's foreground silhouette at 4 x 4 resolution (share of non-background pixels in each 2 x 2
  cell). Color-free local geometry: the linear patch embedding mixes color and outline, and this target makes
  it encode the outline on its own, from which shape, size and glyphs are built up by the later layers;
* ``context``: the owner's silhouette in the 5 x 5 patches around the patch (40 x 40 px at 4 px resolution,
  100 values; zeros on background patches, with ``box_valid`` marking where it applies). What makes shape
  learnable quickly: an MLP reads the shape off this window (95 % in a measured probe), while a tower trained on
  the per-patch labels alone was still at chance after 5,000 images because it first had to discover which
  neighbours to look at.

The owner of a patch is the element covering most of its pixels *if* it covers at least the evidence threshold
(13 of 64 pixels), else background; so every evidence patch of an element is labelled with that element, unlike
:func:`~stepprune.data.synthvqa.patch_owner`'s plain argmax, which gives a small shape's edge patches to the
background.

Per image (for the CLS objective): ``combos``, a 48-way multi-hot of the (color, shape) pairs present, and
``n_objects``, the number of shapes (clipped to :data:`MAX_COUNT`).
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.patches import PATCH_PIXELS, coverage
from stepprune.data.synthvqa.sample import Sample
from stepprune.data.synthvqa.vocab import (
    COLOR_NAMES,
    EVIDENCE_MIN_COVERAGE,
    GRID,
    IMAGE_SIZE,
    N_PATCHES,
    PATCH_SIZE,
    SHAPES,
    SIZE_NAMES,
    WORDS,
)

IGNORE = -100
KINDS = ("background", "shape", "word")
MAX_COUNT = 20
MASK_CELLS = 4  # the silhouette target is MASK_CELLS x MASK_CELLS cells per patch
CONTEXT_PATCHES = 5  # the context target covers CONTEXT_PATCHES x CONTEXT_PATCHES patches around a patch
CONTEXT_CELL = 4  # ... in cells of CONTEXT_CELL x CONTEXT_CELL pixels
CONTEXT_DIM = (CONTEXT_PATCHES * PATCH_SIZE // CONTEXT_CELL) ** 2
# Sizes of every categorical target (the heads' output widths).
PATCH_CLASSES: dict[str, int] = {"kind": len(KINDS), "color": len(COLOR_NAMES), "shape": len(SHAPES),
                                 "size": len(SIZE_NAMES), "word": len(WORDS)}
N_COMBOS = len(COLOR_NAMES) * len(SHAPES)

_COLOR = {c: i for i, c in enumerate(COLOR_NAMES)}
_SHAPE = {s: i for i, s in enumerate(SHAPES)}
_SIZE = {s: i for i, s in enumerate(SIZE_NAMES)}
_WORD = {w: i for i, w in enumerate(WORDS)}


def patch_owners(owner_map: np.ndarray, n_elements: int) -> np.ndarray:
    """``(576,)`` int: per patch the element covering most of it if that is >= the evidence threshold, else -1.

    Args:
        owner_map: ``(192, 192)`` owner map (-1 background, else element id).
        n_elements: number of elements in the scene.
    """
    counts = coverage(owner_map, n_elements)[:, 1:]  # (576, n_elements), background column dropped
    if n_elements == 0:
        return np.full(N_PATCHES, -1, dtype=np.int64)
    best = counts.argmax(axis=1)
    enough = counts[np.arange(N_PATCHES), best] >= EVIDENCE_MIN_COVERAGE * PATCH_PIXELS
    return np.where(enough, best, -1).astype(np.int64)


def patch_targets(sample: Sample) -> dict[str, np.ndarray]:
    """Dense per-patch targets of one sample (module docstring).

    Returns:
        ``kind``, ``color``, ``shape``, ``size``, ``word``: (576,) int64 class ids (-100 = no target);
        ``anchor``: (576,) float32 0/1; ``box``: (576, 4) float32 in [0, 1]; ``box_valid``: (576,) bool;
        ``mask``: (576, 16) float32 in [0, 1]; ``context``: (576, 100) float32 in [0, 1].
    """
    scene = sample.scene
    n_obj = len(scene.objects)
    owners = patch_owners(sample.rendered.owner, n_obj + len(scene.texts))
    out = {k: np.full(N_PATCHES, IGNORE, dtype=np.int64) for k in ("color", "shape", "size", "word")}
    kind = np.zeros(N_PATCHES, dtype=np.int64)
    anchor = np.zeros(N_PATCHES, dtype=np.float32)
    box = np.zeros((N_PATCHES, 4), dtype=np.float32)
    centres = (np.arange(GRID) + 0.5) * PATCH_SIZE  # patch centres in pixels
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    cx, cy = cx.ravel(), cy.ravel()
    for el in (*scene.objects, *scene.texts):
        mine = np.flatnonzero(owners == el.id)
        if mine.size == 0:
            continue
        geom = sample.geometry[el.id]
        out["color"][mine] = _COLOR[el.color]
        box[mine] = np.asarray(geom.bbox, dtype=np.float32) / (IMAGE_SIZE - 1)
        if el.id < n_obj:
            kind[mine] = 1
            out["shape"][mine] = _SHAPE[el.shape]
            out["size"][mine] = _SIZE[el.size]
            gx, gy = geom.centroid
            anchor[mine[np.argmin((cx[mine] - gx) ** 2 + (cy[mine] - gy) ** 2)]] = 1.0
        else:
            kind[mine] = 2
            out["word"][mine] = _WORD[el.word]
    cell = PATCH_SIZE // MASK_CELLS
    fg = (sample.rendered.owner >= 0).astype(np.float32)
    # (row, cy, y, col, cx, x) -> mean over the pixels of each cell -> (row, col, cy, cx)
    mask = fg.reshape(GRID, MASK_CELLS, cell, GRID, MASK_CELLS, cell).mean(axis=(2, 5)).transpose(0, 2, 1, 3)
    return {"kind": kind, **out, "anchor": anchor, "box": box, "box_valid": kind > 0,
            "mask": np.ascontiguousarray(mask.reshape(N_PATCHES, MASK_CELLS * MASK_CELLS)),
            "context": context_silhouettes(sample.rendered.owner, owners)}


def context_silhouettes(owner_map: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """(576, 100) float32: per patch, the share of each 4 x 4-pixel cell of the 5 x 5 patches around it that
    shows the patch's owner (zeros where the patch has no owner).

    Each owner's silhouette is pooled to 4 px cells once; a patch's window is then a 10 x 10 slice of it.
    """
    cells_per_patch = PATCH_SIZE // CONTEXT_CELL
    side = CONTEXT_PATCHES * cells_per_patch  # window side in cells
    half = CONTEXT_PATCHES // 2 * cells_per_patch
    n_cells = IMAGE_SIZE // CONTEXT_CELL
    out = np.zeros((N_PATCHES, side * side), dtype=np.float32)
    for el in np.unique(owners[owners >= 0]):
        pooled = (owner_map == el).reshape(n_cells, CONTEXT_CELL, n_cells, CONTEXT_CELL).mean(axis=(1, 3))
        padded = np.pad(pooled, half)
        for p in np.flatnonzero(owners == el):
            r, c = divmod(int(p), GRID)
            y, x = r * cells_per_patch, c * cells_per_patch  # window start in padded cells
            out[p] = padded[y: y + side, x: x + side].ravel()
    return out


def image_targets(sample: Sample) -> dict[str, np.ndarray]:
    """Image-level targets for the CLS objective.

    Returns:
        ``combos``: (48,) float32 multi-hot over (color, shape) pairs, index ``color * 6 + shape``;
        ``n_objects``: () int64, the number of shapes, at most :data:`MAX_COUNT`.
    """
    combos = np.zeros(N_COMBOS, dtype=np.float32)
    for o in sample.scene.objects:
        combos[_COLOR[o.color] * len(SHAPES) + _SHAPE[o.shape]] = 1.0
    return {"combos": combos, "n_objects": np.asarray(min(len(sample.scene.objects), MAX_COUNT), dtype=np.int64)}
