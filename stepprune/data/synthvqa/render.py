"""Scene -> pixels: the RGB image and the owner map (which element each pixel shows)."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from stepprune.data.synthvqa.scene import Background, Scene
from stepprune.data.synthvqa.shapes import shape_mask, text_mask
from stepprune.data.synthvqa.vocab import COLORS, IMAGE_SIZE


@dataclasses.dataclass
class Rendered:
    """A drawn scene.

    Attributes:
        image: ``(192, 192, 3)`` uint8 RGB.
        owner: ``(192, 192)`` int16, the id of the element whose pixel is visible there, ``-1`` for
        background.
    """

    image: np.ndarray
    owner: np.ndarray

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.image, "RGB")


def render_background(bg: Background, size: int = IMAGE_SIZE) -> np.ndarray:
    """The background as a ``(size, size, 3)`` uint8 array."""
    c1 = np.asarray(bg.color, np.float32)
    if bg.kind == "plain" or bg.kind == "noise":
        img = np.broadcast_to(np.asarray(bg.color, np.uint8), (size, size, 3))
    elif bg.kind == "gradient":
        if bg.color2 is None:
            raise ValueError("a gradient background needs color2")
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        if bg.direction == "horizontal":
            t = np.broadcast_to(ramp[None, :], (size, size))
        elif bg.direction == "vertical":
            t = np.broadcast_to(ramp[:, None], (size, size))
        elif bg.direction == "diagonal":
            t = (ramp[None, :] + ramp[:, None]) / 2
        else:
            raise ValueError(f"unknown gradient direction {bg.direction!r}")
        c2 = np.asarray(bg.color2, np.float32)
        img = np.rint(c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.uint8)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    if bg.kind == "noise" and bg.noise > 0:
        rng = np.random.default_rng(bg.noise_seed)
        noise = rng.integers(-bg.noise, bg.noise + 1, size=(size, size, 3), dtype=np.int16)
        return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def render_scene(scene: Scene) -> Rendered:
    """Draw ``scene``: background, then objects in order (later ones occlude earlier ones), then texts."""
    image = render_background(scene.background)
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, np.int16)
    stamps = [(o.id, o.color, o.x, o.y, shape_mask(o.shape, o.extent)) for o in scene.objects]
    stamps += [(t.id, t.color, t.x, t.y, text_mask(t.word, t.font_size)) for t in scene.texts]
    for eid, color, x, y, mask in stamps:
        h, w = mask.shape
        if x < 0 or y < 0 or x + w > IMAGE_SIZE or y + h > IMAGE_SIZE:
            raise ValueError(f"{scene.image_id}: element {eid} at ({x}, {y}) size {w}x{h} leaves the image")
        image[y:y + h, x:x + w][mask] = COLORS[color]
        owner[y:y + h, x:x + w][mask] = eid
    return Rendered(image=image, owner=owner)
