"""``evidence``: an oracle control that keeps each question's evidence patches, then random others up to K.

SynthVQA records, for every question, the patches that hold what answers it (``evidence``, raster indices of
the 24x24 grid). Keeping those first and filling up at random (the same fill ``random`` draws for the sample) is
a selection no deployable method can make, because it reads the answer's location from the labels. It measures
how much any selector could gain over ``random`` at the same K on a given backbone; a learned selector between
the two has learned something, one at ``random`` has not.

``scope="image"`` is the question-agnostic variant: it keeps the union of the evidence of *every* question asked
about the same image (by ``image_id``), i.e. everything on the image that some question is about (the objects and
the text), whichever question is being asked. A selector that does not read the question can at best learn that.
Where it scores no better than ``random`` while ``scope="question"`` does, only a selector that reads the
question can beat random on that backbone (measured on the tiny backbone: ``jobs/bench_selection_headroom.py``).

Two knobs probe *which* selections pay, with the same fill draw:

* ``share`` keeps only a random share of the question's evidence (round(share x |evidence|) patches); the rest of
  its evidence goes to the back of the fill order (taken only when nothing else is left), so the evidence recall
  is that share;
* ``fill`` says what the fill takes: ``"random"`` (random's draw, which may land on other objects),
  ``"background"`` (random's draw, taking the evidence of every other question about the image, i.e. the objects
  and text the question does not ask about, only when nothing else is left) or ``"distractors"`` (those patches
  first, in random order).

The evidence is read from a SynthVQA ``questions.jsonl`` (``config.questions``) and looked up by the sample's key,
which the harness sets to the question id. It is deliberately not in the method registry: it is not a method one
could deploy or cost, it needs label files, and every loop over the registry (smoke run, FLOPs tables, the eval
matrix's method list) is about deployable methods. The training job's held-out check and
:mod:`stepprune.train_gap` build it directly.

Example::

    oracle = EvidenceOracle(EvidenceConfig(budget=64, questions="data/synthvqa/native/val/questions.jsonl"))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from stepprune.methods.base import MethodConfig, SelectionContext
from stepprune.methods.controls import _IndexSelection, sample_generator


def evidence_first(evidence: Sequence[int], perm: Tensor, k: int, gen: torch.Generator | None = None) -> Tensor:
    """(k,) sorted token indices: the evidence patches (each once; a random k of them when there are more), then
    ``perm``'s first indices that are not evidence, up to k in all.

    Args:
        evidence: raster indices of the evidence patches (duplicates allowed).
        perm: (N,) a permutation of the token indices (the random fill order).
        k: tokens to keep (<= N).
        gen: draws which evidence patches are kept when there are more than k.
    """
    ev = torch.tensor(sorted({int(e) for e in evidence}), dtype=torch.long)
    if len(ev) > k:
        ev = ev[torch.randperm(len(ev), generator=gen)][:k]
    rest = perm[~torch.isin(perm, ev)][: k - len(ev)]
    return torch.cat([ev, rest]).sort().values


def read_evidence(path: str | Path, scope: str = "question") -> dict[str, list[int]]:
    """qid -> evidence patch indices from a SynthVQA ``questions.jsonl``: the question's own (``scope="question"``)
    or the sorted union over every question with the same ``image_id`` (``scope="image"``).

    Raises:
        ValueError: naming the file, row and field of a malformed record.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"evidence: questions file {path} does not exist")
    out: dict[str, list[int]] = {}
    image_of: dict[str, str] = {}
    with path.open() as f:
        for row, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, row {row}: not JSON ({e.msg})") from None
            qid, ev = rec.get("qid") if isinstance(rec, dict) else None, (rec or {}).get("evidence")
            if not isinstance(qid, str) or not qid:
                raise ValueError(f"{path}, row {row}, field 'qid': missing or not a string")
            if not isinstance(ev, list) or not all(isinstance(p, int) and p >= 0 for p in ev):
                raise ValueError(f"{path}, row {row}, field 'evidence': must be a list of patch indices")
            out[qid] = ev
            if scope == "image":
                image = rec.get("image_id")
                if not isinstance(image, str) or not image:
                    raise ValueError(f"{path}, row {row}, field 'image_id': missing or not a string "
                                     "(needed by scope='image')")
                image_of[qid] = image
    if scope == "image":
        union: dict[str, set[int]] = {}
        for qid, image in image_of.items():
            union.setdefault(image, set()).update(out[qid])
        out = {qid: sorted(union[image]) for qid, image in image_of.items()}
    return out


@dataclasses.dataclass
class EvidenceConfig(MethodConfig):
    """Config of ``evidence``.

    Attributes:
        questions: the SynthVQA ``questions.jsonl`` whose ``evidence`` the oracle reads (by ``qid``).
        seed: the random fill's seed, mixed with each sample's key exactly as ``random`` mixes it.
        scope: ``"question"``: the question's own evidence; ``"image"``: the union over every question on the same
            image (the question-agnostic oracle).
        share: the share of that evidence kept (a random subset, drawn per sample); 1 keeps all (up to K).
        fill: ``"random"``, ``"background"`` or ``"distractors"`` (module docstring).
    """

    questions: str | None = None
    seed: int = 0
    scope: str = "question"
    share: float = 1.0
    fill: str = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.questions:
            raise ValueError("EvidenceConfig: set questions to a SynthVQA questions.jsonl (the evidence source)")
        if self.scope not in ("question", "image"):
            raise ValueError(f"EvidenceConfig: scope must be 'question' or 'image', got {self.scope!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"EvidenceConfig: share must be in [0, 1], got {self.share}")
        if self.fill not in ("random", "background", "distractors"):
            raise ValueError(f"EvidenceConfig: fill must be 'random', 'background' or 'distractors', got {self.fill!r}")


class EvidenceOracle(_IndexSelection):
    """Keeps the question's (or, with ``scope="image"``, the image's) evidence patches first, then ``random``'s fill,
    K in all, in raster order."""

    name = "evidence"
    config_class = EvidenceConfig
    uses_text = True  # it reads the question's labels, a stronger signal than its text

    def __init__(self, config=None):
        super().__init__(config)
        self._evidence: dict[str, dict[str, list[int]]] = {}

    def evidence_of(self, key: str, scope: str | None = None) -> list[int]:
        """The evidence of question ``key`` in ``scope`` (default: the config's)."""
        scope = scope or self.config.scope
        if scope not in self._evidence:
            self._evidence[scope] = read_evidence(self.config.questions, scope)
        if key not in self._evidence[scope]:
            raise ValueError(f"evidence: no question with qid {key!r} in {self.config.questions}")
        return self._evidence[scope][key]

    def indices(self, ctx: SelectionContext, b: int, rows: int, cols: int, k: int) -> Tensor:
        c, key, n = self.config, ctx.sample_key(b), rows * cols
        gen = sample_generator(c.seed, key)
        perm = torch.randperm(n, generator=gen)  # random's own draw: same fill as random for the sample
        evidence = sorted({e for e in self.evidence_of(key) if e < n})
        back: list[int] = []
        if c.share < 1.0 and evidence:
            order = torch.randperm(len(evidence), generator=gen).tolist()
            keep = round(c.share * len(evidence))
            back = [evidence[i] for i in order[keep:]]  # the evidence left out, kept out of the fill
            evidence = [evidence[i] for i in order[:keep]]
        front: list[int] = []
        if c.fill != "random":
            own = set(self.evidence_of(key, "question"))
            others = [e for e in self.evidence_of(key, "image") if e < n and e not in own]
            others = [others[i] for i in torch.randperm(len(others), generator=gen).tolist()]
            (front if c.fill == "distractors" else back).extend(others)
        if front or back:
            moved = torch.tensor(front + back, dtype=torch.long)
            perm = torch.cat([moved[: len(front)], perm[~torch.isin(perm, moved)], moved[len(front):]])
        return evidence_first(evidence, perm, k, gen)
