"""Binary masks of shapes and words, the only pixels SynthVQA ever draws.

Masks are rasterised once per (shape, extent) or (word, font size) with PIL and cached. Layout and rendering
both stamp these masks, so the pixels a question's evidence is computed from are exactly the pixels in the
image. Drawing is aliased on purpose: every foreground pixel then has exactly its element's palette color,
which keeps per-patch labels crisp (a patch's owner is never a blend).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _polygon_mask(d: int, points: list[tuple[float, float]]) -> np.ndarray:
    canvas = Image.new("L", (d, d), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas) > 127


@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, d: int) -> np.ndarray:
    """Boolean ``(d, d)`` mask of ``shape`` whose bounding box spans ``d`` pixels. Read-only (cached)."""
    if d < 4:
        raise ValueError(f"shape extent must be >= 4 px, got {d}")
    e = d - 1  # last pixel coordinate
    if shape == "circle":
        canvas = Image.new("L", (d, d), 0)
        ImageDraw.Draw(canvas).ellipse([0, 0, e, e], fill=255)
        mask = np.asarray(canvas) > 127
    elif shape == "square":
        # A full-extent square looks much bigger than a circle of the same extent; 0.82 evens the visual size.
        inset = round(d * 0.09)
        mask = np.zeros((d, d), bool)
        mask[inset:d - inset, inset:d - inset] = True
    elif shape == "triangle":
        h = e * math.sqrt(3) / 2
        top = (e - h) / 2
        mask = _polygon_mask(d, [(e / 2, top), (e, top + h), (0, top + h)])
    elif shape == "diamond":
        mask = _polygon_mask(d, [(e / 2, 0), (e, e / 2), (e / 2, e), (0, e / 2)])
    elif shape == "star":
        # A fat five-pointed star (inner radius 0.5 R), so that even a 14 px star still reads as a star.
        r_out, r_in, c = e / 2, e / 4, e / 2
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((c + r * math.cos(a), c + 0.05 * e + r * math.sin(a)))
        mask = _polygon_mask(d, pts)
    elif shape == "cross":
        arm = max(2, round(d * 0.36))
        lo = (d - arm) // 2
        mask = np.zeros((d, d), bool)
        mask[lo:lo + arm, :] = True
        mask[:, lo:lo + arm] = True
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # PIL's bundled default font (Aileron) at a given size: no font file from outside, identical on every
    # machine with the same Pillow version.
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=None)
def text_mask(word: str, font_size: int) -> np.ndarray:
    """Boolean mask of ``word`` rendered in PIL's default font, cropped to its ink. Read-only (cached).

    The glyphs are drawn with a 1 px stroke so that strokes stay at least two pixels wide at 192 px, and then
    thresholded, so the mask (and the image) holds no half-covered pixels.
    """
    font = _font(font_size)
    left, top, right, bottom = font.getbbox(word, stroke_width=1)
    w, h = right - left + 2, bottom - top + 2
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), word, font=font, fill=255, stroke_width=1,
                                stroke_fill=255)
    mask = np.asarray(canvas) > 127
    ys, xs = np.nonzero(mask)
    mask = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].copy()
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=None)
def dilated(mask_key: tuple, pad: int) -> np.ndarray:
    """The mask named by ``mask_key`` (``("shape", name, d)`` or ``("text", word, size)``) grown by ``pad`` px
    in every direction (a square structuring element), on a canvas ``2 * pad`` larger. Read-only (cached)."""
    kind, name, n = mask_key
    mask = shape_mask(name, n) if kind == "shape" else text_mask(name, n)
    h, w = mask.shape
    out = np.zeros((h + 2 * pad, w + 2 * pad), bool)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            out[dy:dy + h, dx:dx + w] |= mask
    out.setflags(write=False)
    return out
