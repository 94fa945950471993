"""The scene curriculum of backbone pretraining: sparse scenes first, the full 1-20-object distribution last.

A stage is a list of :class:`Phase` objects, each a number of optimizer steps over scenes with a given range of
shape counts. Images are drawn fresh from the SynthVQA generator (train split, per-image seeds), so no image is
ever repeated and the data are a pure function of ``(seed, stage, phase, step)``: a resumed run continues with
exactly the images it would have seen.

Why a curriculum: with 1-5 shapes every attribute, relation and count is unambiguous and the answer depends on
few tokens, so the mapping "question word -> matching visual token" is learned before busy scenes make it hard
(the feasibility note's recommendation 3). The last phase uses the evaluation distribution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from stepprune.data.synthvqa.config import SynthVQAConfig, check_families

# Each (stage, phase) draws from its own block of train-split indices; a block is far larger than any run.
_BLOCK = 10_000_000


@dataclasses.dataclass
class Phase:
    """One curriculum phase.

    Attributes:
        steps: optimizer steps in this phase.
        min_objects: fewest shapes per scene.
        max_objects: most shapes per scene (uniform in between, as the generator draws them).
        families: train only on these question families (empty: all). Why: the yes/no families (existence,
            mme) need a comparison of the question with the retrieved tokens, and on the full mix the language
            model sits at their 50 % prior while it learns the copy-like families; a short phase of one-shape
            scenes asked only yes/no questions breaks that plateau (measured from the committed checkpoint:
            teacher-forced existence on one-shape training scenes 50 % -> 74 % in 250 such steps, where 150 more
            steps of the full mix on 1-3 shapes left it at 50 %). The questions are drawn as usual and the
            others are dropped, so such a step packs about a quarter of the usual answers; ``family_weights``
            asks only the wanted families instead.
        family_weights: the generator's relative frequency of each question family in this phase (empty: the
            generator's defaults, ``DEFAULT_FAMILY_WEIGHTS``); families left out are never asked, so every
            question slot of the image trains the phase's families.
    """

    steps: int
    min_objects: int = 1
    max_objects: int = 20
    families: list[str] = dataclasses.field(default_factory=list)
    family_weights: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"Phase.steps must be >= 0, got {self.steps}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"Phase: need 1 <= min_objects <= max_objects, got {self.min_objects}, "
                             f"{self.max_objects}")
        check_families(self.families, "Phase.families")
        if self.family_weights:
            try:  # the generator's own check of the weights (known families, >= 0, one > 0), at config time
                self.generator(seed=0, questions_per_image=1)
            except ValueError as e:
                raise ValueError(f"Phase: {e}") from None

    def generator(self, seed: int, questions_per_image: int) -> SynthVQAConfig:
        """The SynthVQA generator config of this phase's images."""
        extra = {"family_weights": dict(self.family_weights)} if self.family_weights else {}
        return SynthVQAConfig(seed=seed, min_objects=self.min_objects, max_objects=self.max_objects,
                              questions_per_image=questions_per_image, **extra)


class Curriculum:
    """The phases of one stage and the images each optimizer step uses.

    Args:
        phases: the phases, in order.
        stage: the stage number (keeps the stages' images apart).
        seed: the SynthVQA master seed of the train split.
        questions_per_image: question slots per image.
    """

    def __init__(self, phases: Sequence[Phase], stage: int, seed: int = 0, questions_per_image: int = 8):
        if not phases:
            raise ValueError("a curriculum needs at least one phase")
        self.phases = list(phases)
        self.stage = stage
        self.configs = [p.generator(seed, questions_per_image) for p in self.phases]
        self.starts = [sum(p.steps for p in self.phases[:i]) for i in range(len(self.phases))]

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def phase_at(self, step: int) -> int:
        """Index of the phase that optimizer step ``step`` (0-based) belongs to."""
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} outside 0..{self.total_steps - 1}")
        return max(i for i, s in enumerate(self.starts) if s <= step and self.phases[i].steps > 0)

    def families_at(self, step: int) -> frozenset[str] | None:
        """The question families trained at ``step`` (None: all)."""
        fams = self.phases[self.phase_at(step)].families
        return frozenset(fams) if fams else None

    def images(self, step: int, batch_size: int) -> list[tuple[SynthVQAConfig, int]]:
        """The ``(generator config, train-split index)`` of each image of step ``step``'s batch."""
        i = self.phase_at(step)
        base = (self.stage * 100 + i) * _BLOCK + (step - self.starts[i]) * batch_size
        if (step - self.starts[i] + 1) * batch_size > _BLOCK:
            raise ValueError("phase too long for its index block")
        return [(self.configs[i], base + j) for j in range(batch_size)]
