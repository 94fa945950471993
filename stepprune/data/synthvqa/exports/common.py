"""What every benchmark exporter shares: the native split it reads, image writing with caching, id
bookkeeping.

Every exported item is listed in ``<benchmarks>/<split>/id_map.jsonl`` as ``{"benchmark", "id", "qid",
"image_id", "image"}``: its id in the benchmark's own format, the native question it came from, the native
image, and the image's path inside the benchmark folder (MMBench, whose images are base64 in the TSV, gives
``"image_sha1"`` of the encoded bytes instead). Evaluation code joins on it to recover evidence patches for
items read through a real benchmark's loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from stepprune.data.synthvqa.files import encode, link_or_copy, write_bytes
from stepprune.data.synthvqa.native import read_questions, read_scenes
from stepprune.data.synthvqa.sample import SPLIT_CODES


def coco_image_id(scene: dict[str, Any]) -> int:
    """A COCO-style integer image id, unique across splits: split code * 10^6 + index."""
    return SPLIT_CODES[scene["split"]] * 1_000_000 + int(scene["index"])


def coco_file_name(scene: dict[str, Any]) -> str:
    """``COCO_val2014_<12-digit id>.jpg``, as POPE and VQAv2 name their images."""
    return f"COCO_val2014_{coco_image_id(scene):012d}.jpg"


def question_index(qid: str) -> int:
    """Position of a native question within its image (the ``k`` of ``<image_id>_q<k>``)."""
    return int(qid.rsplit("_q", 1)[1])


@dataclasses.dataclass
class ExportContext:
    """A native split being exported.

    Attributes:
        native_dir: the native split folder.
        root: the folder that receives one sub-folder per benchmark.
        split: the native split name (``"val"`` or ``"test"``).
        jpeg_quality: JPEG quality of exported images.
    """

    native_dir: Path
    root: Path
    split: str
    jpeg_quality: int = 95
    questions: list[dict[str, Any]] = dataclasses.field(init=False)
    scenes: dict[str, dict[str, Any]] = dataclasses.field(init=False)
    id_rows: list[dict[str, Any]] = dataclasses.field(init=False, default_factory=list)
    _encoded: dict[tuple[str, str], bytes] = dataclasses.field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.native_dir, self.root = Path(self.native_dir), Path(self.root)
        self.questions = read_questions(self.native_dir)
        self.scenes = read_scenes(self.native_dir)

    def of_families(self, *families: str) -> list[dict[str, Any]]:
        """Native questions of the given families, in native order."""
        return [q for q in self.questions if q["family"] in families]

    def png_path(self, image_id: str) -> Path:
        return self.native_dir / self.scenes[image_id]["image"]

    def image_bytes(self, image_id: str, fmt: str = "JPEG") -> bytes:
        """The native image re-encoded (cached per image and format)."""
        key = (image_id, fmt)
        if key not in self._encoded:
            self._encoded[key] = encode(self.png_path(image_id), fmt, self.jpeg_quality)
        return self._encoded[key]

    def write_image(self, image_id: str, dst: Path) -> None:
        """Put the native image at ``dst``: a link to the PNG for ``.png``, else a JPEG (once per path)."""
        if dst.exists():
            return
        if dst.suffix == ".png":
            link_or_copy(self.png_path(image_id), dst)
        else:
            write_bytes(dst, self.image_bytes(image_id, "JPEG"))

    def record(self, benchmark: str, bench_id: Any, q: dict[str, Any], image: str | None = None,
               image_sha1: str | None = None) -> None:
        """Note one exported item in the id map."""
        row = {"benchmark": benchmark, "id": str(bench_id), "qid": q["qid"], "image_id": q["image_id"]}
        row["image"] = image
        if image_sha1 is not None:
            row["image_sha1"] = image_sha1
        self.id_rows.append(row)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
