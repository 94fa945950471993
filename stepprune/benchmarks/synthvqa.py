"""SynthVQA, read from its native on-disk layout (``<split>/questions.jsonl`` + ``images/``; see
:mod:`stepprune.data.synthvqa.native`) and scored per family by the official rule of the benchmark the family
mirrors:

| family | rule (flavour "llava" / "lmms") |
|---|---|
| existence | POPE: LLaVA's negation-word parse / lmms-eval's strict yes-no |
| attribute, relation | GQA: ``rstrip('.').lower()`` exact match / lmms-eval's case-, punctuation-blind one |
| counting | VQAv2: soft accuracy after EvalAI answer normalisation (lmms: its val variant, no tokenising) |
| text | TextVQA: soft accuracy after EvalAI answer normalisation (m4c), both flavours |
| mc_mmbench | MMBench: rule-based option extraction (``can_infer``; no LLM judge), both flavours |
| mc_science | ScienceQA: LLaVA's letter extraction / lmms-eval's |
| mme | MME: ``calculation.py``'s yes/no parse / lmms-eval's |
| describe | not a benchmark rule: share of the reference's mentions found in the prediction |

Every item's ``meta`` carries ``family``, ``subfamily``, ``evidence`` (patch indices row*24+col),
``referents``, ``scene_stats`` and its fields flattened (``n_objects``, ``n_texts``, ``fg_patch_fraction``),
so evaluation can report accuracy retention and :func:`token_recall` (share of evidence patches a method kept)
per family and per complexity.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stepprune.benchmarks.base import BenchmarkItem, RecordError, check_flavour

NAME = "synthvqa"
HEADLINE = "overall"
QUESTIONS_FILE = "questions.jsonl"
N_PATCHES = 576
FAMILIES = ("existence", "attribute", "relation", "counting", "mc_mmbench", "mc_science", "text", "mme",
            "describe")
MC_FAMILIES = ("mc_mmbench", "mc_science")
PAIR_FAMILIES = ("existence", "mme")
LETTERS = "ABCDE"
STAT_FIELDS = ("n_objects", "n_texts", "fg_patch_fraction")
NOT_IN_OVERALL = ("describe",)  # a recall of mentions, not an accuracy
# The columns of the paper-style tables: one per benchmark-style family (their mean ratio is the Avg.).
TABLE_COLUMNS = ["existence", "attribute", "relation", "counting", "mc_mmbench", "mc_science", "text", "mme"]


# ---- loading
# ---------------------------------------------------------------------------------------------------
def _questions_file(folder: str | Path, split: str | None) -> Path:
    folder = Path(folder)
    candidates = [folder / QUESTIONS_FILE] if split is None else []
    split = split or "test"
    candidates += [folder / split / QUESTIONS_FILE, folder / "native" / split / QUESTIONS_FILE]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no SynthVQA {QUESTIONS_FILE} for split {split!r} under {folder} "
                            f"(looked for {', '.join(str(c) for c in candidates)})")


def _need(cond: bool, file: Path, row: int, field: str, problem: str) -> None:
    if not cond:
        raise RecordError(file, row, field, problem)


def _item(rec: dict[str, Any], file: Path, row: int) -> BenchmarkItem:
    for field in ("qid", "image", "family", "subfamily", "question", "prompt", "answer"):
        _need(isinstance(rec.get(field), str) and rec[field] != "", file, row, field,
              "missing or not a string")
    family = rec["family"]
    _need(family in FAMILIES, file, row, "family", f"unknown family {family!r}; expected one of {FAMILIES}")
    evidence = rec.get("evidence")
    _need(isinstance(evidence, list) and all(isinstance(p, int) and 0 <= p < N_PATCHES for p in evidence),
          file, row, "evidence", f"must be a list of patch indices in 0..{N_PATCHES - 1}")
    stats = rec.get("scene_stats")
    _need(isinstance(stats, dict) and all(k in stats for k in STAT_FIELDS), file, row, "scene_stats",
          f"must be an object with {STAT_FIELDS}")
    choices = rec.get("choices")
    if family in MC_FAMILIES:
        _need(isinstance(choices, list) and 2 <= len(choices) <= len(LETTERS)
              and all(isinstance(c, str) for c in choices), file, row, "choices",
              "must list 2-5 option strings")
        _need(rec["answer"] in LETTERS[:len(choices)], file, row, "answer",
              f"must be an option letter within {LETTERS[:len(choices)]}, got {rec['answer']!r}")
    if family in PAIR_FAMILIES:
        _need(isinstance(rec.get("pair_id"), str), file, row, "pair_id",
              "a yes/no pair question needs a pair_id")
        _need(rec["answer"] in ("yes", "no"), file, row, "answer",
              f"must be yes or no, got {rec['answer']!r}")
    image = file.parent / rec["image"]
    _need(image.is_file(), file, row, "image", f"image file {image} does not exist")
    meta = {
        "family": family,
        "subfamily": rec["subfamily"],
        "benchmark": rec.get("benchmark"),
        "question": rec["question"],
        "image_id": rec.get("image_id"),
        "split": rec.get("split"),
        "evidence": list(evidence),
        "referents": list(rec.get("referents") or []),
        "scene_stats": dict(stats),
        **{k: stats[k] for k in STAT_FIELDS},
        "choices": choices,
        "hint": rec.get("hint"),
        "ocr_tokens": rec.get("ocr_tokens"),
        "pair_id": rec.get("pair_id"),
    }
    if family == "describe":
        mentions = (rec.get("extra") or {}).get("mentions")
        _need(isinstance(mentions, list) and len(mentions) > 0, file, row, "extra.mentions",
              "a describe question needs its reference mentions")
        meta["mentions"] = list(mentions)
    return BenchmarkItem(qid=rec["qid"], prompt=rec["prompt"], answer=rec["answer"], image_path=image,
                         meta=meta)


def load(folder: str | Path, split: str | None = None, limit: int | None = None,
         families: str | Sequence[str] | None = None) -> list[BenchmarkItem]:
    """Read SynthVQA questions.

    Args:
        folder: a native split folder (holding ``questions.jsonl``; then ``split`` may be None), the
            ``native`` folder holding split folders, or the generator's output folder.
        split: ``"train"``, ``"val"`` or ``"test"`` (default ``"test"`` when ``folder`` is not a split
            folder).
        limit: read at most this many questions (counted after the family filter).
        families: keep only these families (a name or a list; e.g. ``"describe"``, the long-answer task of
            decode-time experiments); None keeps every family.

    Raises:
        FileNotFoundError: no ``questions.jsonl`` found.
        ValueError: an unknown family in ``families``.
        RecordError: a malformed row (names the file, the 1-based line and the field).
    """
    wanted = None if families is None else ({families} if isinstance(families, str) else set(families))
    if wanted is not None and not wanted <= set(FAMILIES):
        raise ValueError(f"unknown SynthVQA famil(ies) {sorted(wanted - set(FAMILIES))}; known: {FAMILIES}")
    file = _questions_file(folder, split)
    items = []
    with open(file, encoding="utf-8") as f:
        for row, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if limit is not None and len(items) >= limit:
                break
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(file, row, "<line>", f"not valid JSON: {e}") from None
            _need(isinstance(rec, dict), file, row, "<line>", "not a JSON object")
            if wanted is not None and rec.get("family") not in wanted:
                continue
            items.append(_item(rec, file, row))
    return items


# ---- scoring: each family delegates to the module of the benchmark it mirrors
# -----------------------------------------------------------------------------------------
def _mention_recall(pred: str, mentions: Sequence[str]) -> float:
    """Share of reference mentions ("large red star", a quoted word) found in the prediction, with
    multiplicity. Quotes are optional: a mention '"lamp"' is found as the word lamp."""
    low = pred.lower()
    need = Counter(m.strip('"').lower() for m in mentions)
    found = sum(min(c, len(re.findall(rf"\b{re.escape(m)}\b", low))) for m, c in need.items())
    return found / sum(need.values())


def _mirror(item: BenchmarkItem):
    """(benchmark module, item in that module's form) for a SynthVQA item, so the official rule is applied by
    the one module that implements it."""
    from stepprune.benchmarks import gqa, mmbench, mme, pope, scienceqa, textvqa, vqav2

    fam, gold = item.meta["family"], item.answer
    proxy = lambda answer, **meta: BenchmarkItem(item.qid, item.prompt, answer, meta=meta)  # noqa: E731
    if fam == "existence":
        return pope, proxy(gold)
    if fam in ("attribute", "relation"):
        return gqa, proxy(gold)
    if fam == "counting":
        records = [{"answer": gold, "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]
        return vqav2, proxy(gold, answer_records=records)
    if fam == "text":
        return textvqa, proxy([gold] * 10)
    if fam == "mc_mmbench":
        return mmbench, proxy(gold, options={LETTERS[i]: c for i, c in enumerate(item.meta["choices"])})
    if fam == "mc_science":
        return scienceqa, proxy(gold, n_choices=len(item.meta["choices"]))
    if fam == "mme":
        return mme, proxy(gold)
    raise ValueError(f"item {item.qid}: unknown family {fam!r}")


def details(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> dict[str, Any]:
    """The mirrored scorer's explanation of one verdict, plus the family."""
    check_flavour(flavour)
    if item.meta["family"] == "describe":
        return {"family": "describe", "score": 0.0 if prediction is None else _mention_recall(
            prediction, item.meta["mentions"])}
    module, proxy = _mirror(item)
    return {"family": item.meta["family"], "rule": module.NAME, **module.details(prediction, proxy, flavour)}


def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """The per-item verdict of the mirrored benchmark's official rule (module table); missing predictions
    score 0."""
    return details(prediction, item, flavour)["score"]


def aggregate(items: Sequence[BenchmarkItem], predictions: Sequence[str | None],
              flavour: str = "llava") -> dict[str, float]:
    """Accuracy per family, per family/subfamily and overall, with counts.

    Keys: ``overall`` (mean over every item except ``describe``, whose score is a recall), ``<family>``,
    ``<family>/<subfamily>``, ``n/overall``, ``n/<family>``; plus ``existence/f1`` (POPE's F1, "yes" positive)
    and ``mme/acc_plus`` (share of pairs with both answers right), when those families are present.
    """
    check_flavour(flavour)
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
    scores = [score_one(p, it, flavour) for it, p in zip(items, predictions)]
    by_family: dict[str, list[float]] = defaultdict(list)
    by_sub: dict[str, list[float]] = defaultdict(list)
    for it, s in zip(items, scores):
        by_family[it.meta["family"]].append(s)
        by_sub[f"{it.meta['family']}/{it.meta['subfamily']}"].append(s)
    counted = [s for it, s in zip(items, scores) if it.meta["family"] not in NOT_IN_OVERALL]
    out: dict[str, float] = {HEADLINE: sum(counted) / len(counted) if counted else 0.0,
                             "n/overall": float(len(counted))}
    for fam in sorted(by_family):
        out[fam] = sum(by_family[fam]) / len(by_family[fam])
        out[f"n/{fam}"] = float(len(by_family[fam]))
    for key in sorted(by_sub):
        out[key] = sum(by_sub[key]) / len(by_sub[key])
    exist = [(it, p) for it, p in zip(items, predictions) if it.meta["family"] == "existence"]
    if exist:
        from stepprune.benchmarks.pope import parse_label

        pred = [parse_label(p, flavour) if p is not None else None for _, p in exist]
        gold = [it.answer for it, _ in exist]
        tp = sum(p == "yes" and g == "yes" for p, g in zip(pred, gold))
        fp = sum(p == "yes" and g == "no" for p, g in zip(pred, gold))
        fn = sum(p != "yes" and g == "yes" for p, g in zip(pred, gold))
        # POPE's script divides unguarded (crashes when a model never says yes); report 0 instead.
        out["existence/f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    pairs: dict[str, list[float]] = defaultdict(list)
    for it, s in zip(items, scores):
        if it.meta["family"] == "mme":
            pairs[it.meta["pair_id"]].append(s)
    if pairs:
        out["mme/acc_plus"] = sum(all(v == 1.0 for v in ss) for ss in pairs.values()) / len(pairs)
    return out


def token_recall(item: BenchmarkItem, kept: Iterable[int]) -> float | None:
    """Share of the item's evidence patches among ``kept`` patch indices (None when it has no evidence)."""
    evidence = set(item.meta["evidence"])
    if not evidence:
        return None
    return len(evidence & {int(k) for k in kept}) / len(evidence)
