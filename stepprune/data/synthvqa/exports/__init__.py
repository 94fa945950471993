"""Native split -> each real benchmark's official on-disk layout, so the same loaders read SynthVQA and the
real benchmarks. One module per benchmark; see each module's docstring for its layout::

    <root>/gqa/  mmbench_en/  mme/  pope/  scienceqa/  vqav2/  textvqa/  id_map.jsonl
"""

from __future__ import annotations

from pathlib import Path

from stepprune.data.synthvqa.exports import gqa, mmbench, mme, pope, scienceqa, textvqa, vqav2
from stepprune.data.synthvqa.exports.common import ExportContext
from stepprune.data.synthvqa.files import write_bytes
from stepprune.data.synthvqa.native import dumps

EXPORTERS = {
    "gqa": gqa.export,
    "mmbench": mmbench.export,
    "mme": mme.export,
    "pope": pope.export,
    "scienceqa": scienceqa.export,
    "vqav2": vqav2.export,
    "textvqa": textvqa.export,
}
# benchmark -> its folder under the export root
FOLDERS = {"gqa": "gqa", "mmbench": "mmbench_en", "mme": "mme", "pope": "pope", "scienceqa": "scienceqa",
           "vqav2": "vqav2", "textvqa": "textvqa"}
ID_MAP = "id_map.jsonl"


def export_benchmarks(native_split_dir: str | Path, out_dir: str | Path, split: str,
                      jpeg_quality: int = 95) -> dict[str, int]:
    """Write every benchmark layout of one native split under ``out_dir``, plus ``out_dir/id_map.jsonl``.

    Returns:
        Items written per benchmark (MMBench counts its circular copies, POPE all three files).
    """
    ctx = ExportContext(Path(native_split_dir), Path(out_dir), split, jpeg_quality)
    counts = {name: fn(ctx) for name, fn in EXPORTERS.items()}
    write_bytes(ctx.root / ID_MAP, "".join(dumps(r) + "\n" for r in ctx.id_rows).encode())
    return counts


__all__ = ["EXPORTERS", "FOLDERS", "ID_MAP", "ExportContext", "export_benchmarks"]
