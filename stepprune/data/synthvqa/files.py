"""Small file helpers shared by the exporters: linking images, re-encoding them, writing JSON."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk for 20k training images), copying across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def encode(src: Path, fmt: str, quality: int = 95) -> bytes:
    """The image at ``src`` re-encoded as ``"JPEG"`` (4:4:4 chroma: colored edges stay crisp) or ``"PNG"``."""
    with Image.open(src) as im:
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(buf, format="JPEG", quality=quality, subsampling=0)
    else:
        rgb.save(buf, format=fmt)
    return buf.getvalue()


def write_bytes(dst: Path, data: bytes) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


def write_json(dst: Path, obj: Any, indent: int | None = None) -> None:
    """JSON file (UTF-8, no ASCII escaping)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")
