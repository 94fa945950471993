"""The one configuration object of the SynthVQA generator; every default a CLI needs lives here."""

from __future__ import annotations

import dataclasses
from typing import Any

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Relative frequency with which each family is drawn for a question slot. Pair families (existence, mme) fill
# two slots. Describe is rare because its answer is long and it may appear at most once per image.
DEFAULT_FAMILY_WEIGHTS: dict[str, float] = {
    "existence": 1.0,
    "attribute": 1.5,
    "relation": 1.0,
    "counting": 1.5,
    "mc_mmbench": 1.0,
    "mc_science": 1.0,
    "text": 1.0,
    "mme": 0.8,
    "describe": 0.3,
}


def check_families(names, field: str) -> None:
    """Raise ``ValueError`` naming ``field`` and the unknown ones if ``names`` holds a name that is no family.

    The one check every config that names question families uses (generator weights, curriculum phases, the
    pretraining grounding options), so they agree on what a family is and on the message.
    """
    unknown = sorted(set(names) - set(DEFAULT_FAMILY_WEIGHTS))
    if unknown:
        raise ValueError(f"{field}: unknown question families {unknown}; known: {sorted(DEFAULT_FAMILY_WEIGHTS)}")


@dataclasses.dataclass(frozen=True)
class SynthVQAConfig:
    """How much SynthVQA to generate and what it looks like.

    Attributes:
        seed: master seed; every image's generator is seeded by ``(seed, split, index)``, so any image can be
            regenerated alone and the result does not depend on ``num_workers``.
        n_train_images: images in the train split.
        n_val_images: images in the val split.
        n_test_images: images in the test split.
        questions_per_image: question slots per image (a yes/no pair fills two).
        min_objects: fewest shapes per image.
        max_objects: most shapes per image (drawn uniformly in between, so complexity varies widely).
        max_texts: most rendered words per image (0 .. max_texts, uniform).
        min_visible_fraction: every shape keeps at least this share of its pixels visible after occlusion, so
        it
            stays countable and recognisable.
        family_weights: relative frequency of each question family (see ``DEFAULT_FAMILY_WEIGHTS``).
        llava_splits: splits written as LLaVA-Instruct conversations.
        benchmark_splits: splits written in each real benchmark's on-disk format.
        num_workers: processes that draw images (1 = in-process).
        jpeg_quality: quality of the JPEG copies in the benchmark formats (native images are lossless PNG).
        overwrite: replace an existing output folder's SynthVQA content instead of refusing.
    """

    seed: int = 0
    n_train_images: int = 20_000
    n_val_images: int = 1_000
    n_test_images: int = 1_000
    questions_per_image: int = 8
    min_objects: int = 1
    max_objects: int = 20
    max_texts: int = 3
    min_visible_fraction: float = 0.7
    family_weights: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_FAMILY_WEIGHTS))
    llava_splits: tuple[str, ...] = ("train", "val")
    benchmark_splits: tuple[str, ...] = ("val", "test")
    num_workers: int = 1
    jpeg_quality: int = 95
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("n_train_images", "n_val_images", "n_test_images"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"SynthVQAConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.questions_per_image < 1:
            raise ValueError(f"SynthVQAConfig.questions_per_image must be >= 1, "
                             f"got {self.questions_per_image}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"SynthVQAConfig: need 1 <= min_objects <= max_objects, got "
                             f"{self.min_objects}, {self.max_objects}")
        if not 0 <= self.max_texts <= 3:
            raise ValueError(f"SynthVQAConfig.max_texts must be in 0..3, got {self.max_texts}")
        if not 0.0 < self.min_visible_fraction <= 1.0:
            raise ValueError(f"SynthVQAConfig.min_visible_fraction must be in (0, 1], "
                             f"got {self.min_visible_fraction}")
        check_families(self.family_weights, "SynthVQAConfig.family_weights")
        weights = list(self.family_weights.values())
        if not any(w > 0 for w in weights) or any(w < 0 for w in weights):
            raise ValueError("SynthVQAConfig.family_weights must be >= 0 with at least one > 0")
        for name in ("llava_splits", "benchmark_splits"):
            bad = set(getattr(self, name)) - set(SPLITS)
            if bad:
                raise ValueError(f"SynthVQAConfig.{name}: unknown splits {sorted(bad)}")
        if self.num_workers < 1:
            raise ValueError(f"SynthVQAConfig.num_workers must be >= 1, got {self.num_workers}")

    def n_images(self, split: str) -> int:
        """Images in ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return int(getattr(self, f"n_{split}_images"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for the manifest)."""
        d = dataclasses.asdict(self)
        d["llava_splits"] = list(self.llava_splits)
        d["benchmark_splits"] = list(self.benchmark_splits)
        return d
