"""MME (perception + cognition): reader of the release folders and the official ``calculation.py`` scoring.

On-disk layout (the folder passed to :func:`load`)::

    mme/MME_Benchmark_release_version/<subtask>/   # or mme/<subtask>/ directly
      <img>.jpg|png + <img>.txt                    # flat subtasks
      images/<img>.jpg|png + questions_answers_YN/<img>.txt   # nested subtasks

Each ``.txt`` has two lines ``<question> Please answer yes or no.\\t<Yes|No>`` about the same image.
Subtasks: perception = existence, count, position, color, posters, celebrity, scene, landmark, artwork, OCR;
cognition = commonsense_reasoning, numerical_calculation, text_translation, code_reasoning. Other folders are
ignored. Items come subtask by subtask (that order), images sorted by name, the two questions of an image
adjacent (as in LLaVA's ``llava_mme.jsonl``).

``split``: None (all 14 subtasks), ``"perception"``, ``"cognition"`` or one subtask name. ``limit``: the first
``limit`` images *per subtask* (both questions each), so every subtask keeps whole pairs.

Prompt (LLaVA-1.5): the question with " Please answer yes or no." removed (with the whitespace before it; a
few GT files use two spaces) + ``"\\nAnswer the question using a single word or phrase."``.

Scoring (per subtask: acc = right questions / questions, acc+ = images with both right / images, score =
100 acc + 100 acc+; ``perception`` = sum of 10, ``cognition`` = sum of 4, ``total`` = P + C, the pruning
papers' "MME" column, while LLaVA's MODEL_ZOO "1510.7" is ``perception`` alone):

* ``llava`` (``calculation.py``): the prediction is lowercased; "yes"/"no" if its first 4 characters contain
  "yes", else "no", else "other" (so "Nope", "None", "Norway" are no; "Y" and "I think yes" are other).
* ``lmms`` (``mme/utils.py``): lowercase, strip, delete every "."; exact yes/no, single letters y/n, then the
  same 4-character rule.

Crashes and silent errors guarded:

* a prediction with a newline or tab breaks ``calculation.py``'s 4-field tab line (``ValueError``); here it is
  read with those characters as spaces (what a fixed converter would write) and counted in ``multiline``;
* ``calculation.py`` pairs *consecutive* lines, so a reordered answer file silently corrupts acc+; here pairs
  are formed by image, and ``broken_pairs`` counts the consecutive line pairs (in the order given) that are
  not one image's two questions, i.e. where the official tool would have mis-scored;
* ``unpaired_images`` counts images without exactly two questions (acc+ then needs all of them right);
* a missing prediction (None) is "other" (wrong) and counted in ``missing``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks.base import BenchmarkItem, RecordError, check_flavour
from stepprune.benchmarks.common import SHORT_ANSWER, check_aligned, find_image, limit_reached, percent

NAME = "mme"
HEADLINE = "total"

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
RELEASE_DIR = "MME_Benchmark_release_version"
_YES_NO_INSTRUCTION = re.compile(r"\s*Please answer yes or no\.\s*$")


def _subtasks(split: str | None) -> tuple[str, ...]:
    if split is None:
        return PERCEPTION + COGNITION
    if split in ("perception", "cognition"):
        return PERCEPTION if split == "perception" else COGNITION
    if split in PERCEPTION + COGNITION:
        return (split,)
    raise ValueError(f"unknown MME split {split!r}: use None, 'perception', 'cognition' or a subtask name "
                     f"{PERCEPTION + COGNITION}")


def _question_files(subtask_dir: Path) -> tuple[list[Path], Path]:
    """The subtask's ``.txt`` files and the folder holding its images (nested or flat layout)."""
    nested = subtask_dir / "questions_answers_YN"
    if nested.is_dir():
        return sorted(nested.glob("*.txt")), subtask_dir / "images"
    return sorted(subtask_dir.glob("*.txt")), subtask_dir


def _read_pair(txt: Path) -> list[tuple[str, str]]:
    """The (question, Yes|No) lines of one image's ``.txt``."""
    lines = [line for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != 2:
        raise RecordError(txt, len(lines), "<lines>", f"expected 2 question lines, found {len(lines)}")
    pairs = []
    for row, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise RecordError(txt, row, "question", "expected '<question>\\t<Yes|No>' (one tab)")
        answer = fields[1].strip()
        if answer.lower() not in ("yes", "no"):
            raise RecordError(txt, row, "answer", f"expected Yes or No, got {answer!r}")
        pairs.append((fields[0], answer.capitalize()))
    return pairs


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Reads MME's release folders into items (two per image, adjacent).

    Args:
        folder: the ``mme/`` folder (holding ``MME_Benchmark_release_version/`` or the subtask folders).
        split: None, ``"perception"``, ``"cognition"`` or a subtask name.
        limit: keep the first ``limit`` images of each subtask.
    """
    folder = Path(folder)
    root = folder / RELEASE_DIR if (folder / RELEASE_DIR).is_dir() else folder
    wanted = _subtasks(split)
    present = [s for s in wanted if (root / s).is_dir()]
    if not present:
        raise FileNotFoundError(f"{root}: none of the MME subtask folders {wanted} found")
    items = []
    for subtask in present:
        txts, image_dir = _question_files(root / subtask)
        for n_images, txt in enumerate(txts):
            if limit_reached(n_images, limit):
                break
            image_path = find_image(image_dir, txt.stem, txt, 1, "image")
            image_key = f"{subtask}/{image_path.name}"  # LLaVA's question_id
            for k, (question, answer) in enumerate(_read_pair(txt)):
                items.append(BenchmarkItem(
                    qid=f"{image_key}#{k}",
                    prompt=_YES_NO_INSTRUCTION.sub("", question) + SHORT_ANSWER,
                    answer=answer,
                    image_path=image_path,
                    meta={"subtask": subtask, "image": image_key, "question": question,
                          "category": "perception" if subtask in PERCEPTION else "cognition"},
                ))
    return items


def parse_label(prediction: str | None, flavour: str = "llava") -> str:
    """The prediction as the official parser reads it: ``"yes"``, ``"no"`` or ``"other"``."""
    check_flavour(flavour)
    if prediction is None:
        return "other"
    if flavour == "llava":
        text = prediction.replace("\n", " ").replace("\t", " ").lower()
    else:
        text = prediction.lower().strip().replace(".", "")
        if text in ("yes", "no"):
            return text
        if len(text) == 1:
            return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """``{"label": yes|no|other, "multiline": bool, "score": 0.0|1.0}`` for one question."""
    label = parse_label(prediction, flavour)
    return {"label": label, "multiline": prediction is not None and ("\n" in prediction or "\t" in prediction),
            "score": float(label == item.answer.lower())}


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """1.0 when the parsed label equals the question's Yes/No answer."""
    return details(prediction, item, flavour)["score"]


def _count_broken_pairs(keys: list[str]) -> int:
    """Consecutive line pairs (as ``calculation.py`` reads them) that are not two questions of one image."""
    broken = sum(keys[i] != keys[i + 1] for i in range(0, len(keys) - 1, 2))
    return broken + len(keys) % 2


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None], flavour: str = "llava"
              ) -> dict[str, float]:
    """MME scores per subtask and the perception / cognition / total sums.

    Returns:
        ``<subtask>`` (0-200), ``<subtask>/acc`` and ``<subtask>/acc_plus`` (percent), ``perception``,
        ``cognition``, ``total`` (P + C), and the guards ``multiline``, ``broken_pairs``, ``unpaired_images``,
        ``missing``, ``other`` (predictions parsed as neither yes nor no).
    """
    check_aligned(items, predictions, flavour)
    by_subtask: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for item, pred in zip(items, predictions):
        by_subtask[item.meta["subtask"]].append((item.meta["image"], details(pred, item, flavour)))
    out: dict[str, float] = {}
    flags = {"multiline": 0, "broken_pairs": 0, "unpaired_images": 0,
             "missing": sum(p is None for p in predictions), "other": 0}
    for subtask, rows in by_subtask.items():
        flags["broken_pairs"] += _count_broken_pairs([key for key, _ in rows])
        per_image: dict[str, list[float]] = defaultdict(list)
        for key, d in rows:
            per_image[key].append(d["score"])
            flags["multiline"] += d["multiline"]
            flags["other"] += d["label"] == "other"
        flags["unpaired_images"] += sum(len(s) != 2 for s in per_image.values())
        acc = percent(sum(d["score"] for _, d in rows), len(rows))
        acc_plus = percent(sum(all(s == 1.0 for s in scores) for scores in per_image.values()), len(per_image))
        out.update({subtask: acc + acc_plus, f"{subtask}/acc": acc, f"{subtask}/acc_plus": acc_plus})
    out["perception"] = sum(out.get(s, 0.0) for s in PERCEPTION)
    out["cognition"] = sum(out.get(s, 0.0) for s in COGNITION)
    out["total"] = out["perception"] + out["cognition"]
    out.update({k: float(v) for k, v in flags.items()})
    return out
