"""Pack a LLaVA-Instruct corpus (JSON + image folder) into Parquet shards with Ray Data.

    python jobs/prepare_data.py data.corpus=/data/llava_v1_5_mix665k.json data.image_folder=/data \
        data.shards=/data/shards/mix665k data.max_bad_records=100

Bad records (corrupt image, malformed row) are counted and logged with their row and id, and skipped up to
``data.max_bad_records``; beyond that the job fails and lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import parse  # noqa: E402
from pipeline.config import TrainJobConfig  # noqa: E402

DEFAULT = str(Path(__file__).resolve().parent / "configs" / "embedded.yaml")


def main(argv: list[str] | None = None) -> None:
    cfg = parse(TrainJobConfig, argv, DEFAULT, "Pack an instruction corpus into Parquet shards.")
    from pipeline.cluster import init_ray
    from pipeline.train_job import absolutize, ensure_data

    cfg = absolutize(cfg)
    init_ray(cfg.ray)
    manifest = ensure_data(cfg)
    print(f"{manifest['written']} of {manifest['records']} records written to {cfg.data.shards} "
          f"({len(manifest['bad'])} bad records skipped)")


if __name__ == "__main__":
    main()
