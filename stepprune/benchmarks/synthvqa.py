"""SynthVQA, read from its native format (``<split>/questions.jsonl`` + ``images/``; see
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
import string
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


def load(folder: str | Path, split: str | None = None, limit: int | None = None) -> list[BenchmarkItem]:
    """Read SynthVQA questions.

    Args:
        folder: a native split folder (holding ``questions.jsonl``; then ``split`` may be None), the
            ``native`` folder holding split folders, or the generator's output folder.
        split: ``"train"``, ``"val"`` or ``"test"`` (default ``"test"`` when ``folder`` is not a split
            folder).
        limit: read at most this many questions.

    Raises:
        FileNotFoundError: no ``questions.jsonl`` found.
        RecordError: a malformed row (names the file, the 1-based line and the field).
    """
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
            items.append(_item(rec, file, row))
    return items


# ---- official rules, one small helper each
# ---------------------------------------------------------------------
# TODO(merge): delegate to stepprune.benchmarks.pope.score_one
def _pope_label(pred: str, flavour: str) -> str | None:
    """LLaVA eval_pope: first sentence, commas removed; any word No/no/not -> no, else yes.
    lmms-eval: exactly yes/no after lower+strip, else None (unparseable)."""
    if flavour == "lmms":
        p = pred.lower().strip()
        return p if p in ("yes", "no") else None
    text = pred.split(".")[0] if "." in pred else pred
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "no" in words or "not" in words) else "yes"


# TODO(merge): delegate to stepprune.benchmarks.gqa.score_one
def _gqa_match(pred: str, answer: str, flavour: str) -> bool:
    """LLaVA: ``pred.rstrip('.').lower() == answer`` (convert_gqa_for_eval + eval.py). lmms-eval: strip, then
    case- and punctuation-insensitive equality."""
    if flavour == "lmms":
        table = str.maketrans("", "", string.punctuation)
        return pred.strip().lower().translate(table) == answer.lower().translate(table)
    return pred.rstrip(".").lower() == answer


# TODO(merge): delegate to stepprune.benchmarks.vqav2.score_one / stepprune.benchmarks.textvqa.score_one
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
              "?", "!")
# The look-behind is malformed ("(?!<=" instead of "(?<!"), kept on purpose: it is the official one.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = ("a", "an", "the")


def _vqa_normalise(text: str, tokenise: bool = True) -> str:
    """EvalAI answer processor (LLaVA m4c_evaluator). ``tokenise=False`` skips step 1 (lmms-eval VQAv2 val).

    The contraction table is left out: it only rewrites apostrophe-less contractions ("dont"), and no SynthVQA
    gold answer is or becomes one, so it cannot change a verdict here.
    """
    if tokenise:
        text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _VQA_PUNCT:
        if p + " " in text or " " + p in text or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out, 32)  # the official call passes re.UNICODE (32) as count
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(w for w in words if w not in _ARTICLES)


def _vqa_soft(pred: str, answers: Sequence[str], tokenise_pred: bool = True) -> float:
    """VQA soft accuracy: mean over leave-one-out subsets of min(1, matches / 3)."""
    p = _vqa_normalise(pred, tokenise=tokenise_pred)
    gts = [_vqa_normalise(a) for a in answers]
    accs = [min(1.0, sum(g == p for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))]
    return sum(accs) / len(accs)


# TODO(merge): delegate to stepprune.benchmarks.mmbench.score_one
def _mmbench_letter(pred: str, choices: Sequence[str]) -> str | None:
    """VLMEvalKit ``can_infer`` (rule-based prefetch, no LLM judge): a unique bare option letter (skipped when
    "A" may be an article: "A" present and more than 3 tokens), else a unique option text inside the
    prediction."""
    options = {LETTERS[i]: c for i, c in enumerate(choices)}
    mod = pred
    for ch in ".()[],:;!*#{}":
        mod = mod.replace(ch, " ")
    tokens = mod.split()
    hits = [k for k in options if k in tokens]
    if len(hits) == 1 and not ("A" in tokens and len(tokens) > 3):
        return hits[0]
    low = pred.lower()
    found = [k for k, c in options.items() if str(c).lower() in low]
    return found[0] if len(found) == 1 else None


# TODO(merge): delegate to stepprune.benchmarks.scienceqa.score_one
def _sqa_correct(pred: str, answer: str, n_choices: int, flavour: str) -> bool:
    """LLaVA eval_science_qa: exact letter, "X. ..." (3+ chars), or one "The answer is X." match; the letter
    must be within the options. lmms-eval: stripped lowercase equality, or "X." prefix with X the target."""
    if flavour == "lmms":
        p = pred.strip()
        prefixed = len(p) >= 2 and p[0].isupper() and p[1] == "." and p[0] == answer
        return p.lower() == answer.lower() or prefixed
    options = LETTERS
    if pred in options:
        letter = pred
    elif len(pred) >= 3 and pred[0] in options and pred[1:3] == ". ":
        letter = pred[0]
    else:
        found = re.findall(r"The answer is ([A-Z]).", pred)
        letter = found[0] if len(found) == 1 else "FAILED"
    return letter in options[:n_choices] and letter == answer


# TODO(merge): delegate to stepprune.benchmarks.mme.score_one
def _mme_label(pred: str, flavour: str) -> str:
    """MME calculation.py: lowercase; exact yes/no, else "yes"/"no" inside the first 4 characters, else
    "other". lmms-eval: also strips and removes every ".", and accepts "y"/"n"."""
    p = pred.lower()
    if flavour == "lmms":
        p = p.strip().replace(".", "")
        if p in ("y", "n"):
            return "yes" if p == "y" else "no"
    if p in ("yes", "no"):
        return p
    head = p[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def _mention_recall(pred: str, mentions: Sequence[str]) -> float:
    """Share of reference mentions ("large red star", a quoted word) found in the prediction, with
    multiplicity. Quotes are optional: a mention '"lamp"' is found as the word lamp."""
    low = pred.lower()
    need = Counter(m.strip('"').lower() for m in mentions)
    found = sum(min(c, len(re.findall(rf"\b{re.escape(m)}\b", low))) for m, c in need.items())
    return found / sum(need.values())


# ---- scoring
# ---------------------------------------------------------------------------------------------------
def score_one(prediction: str | None, item: BenchmarkItem, flavour: str = "llava") -> float:
    """The per-item verdict of the mirrored benchmark's official rule (module table); missing predictions
    score 0."""
    check_flavour(flavour)
    if prediction is None:
        return 0.0
    fam, gold = item.meta["family"], item.answer
    if fam == "existence":
        return float(_pope_label(prediction, flavour) == gold)
    if fam in ("attribute", "relation"):
        return float(_gqa_match(prediction, gold, flavour))
    if fam == "counting":
        return _vqa_soft(prediction, [gold] * 10, tokenise_pred=flavour != "lmms")
    if fam == "text":
        return _vqa_soft(prediction, [gold] * 10)
    if fam == "mc_mmbench":
        return float(_mmbench_letter(prediction, item.meta["choices"]) == gold)
    if fam == "mc_science":
        return float(_sqa_correct(prediction, gold, len(item.meta["choices"]), flavour))
    if fam == "mme":
        return float(_mme_label(prediction, flavour) == gold)
    if fam == "describe":
        return _mention_recall(prediction, item.meta["mentions"])
    raise ValueError(f"item {item.qid}: unknown family {fam!r}")


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
        pred = [_pope_label(p, flavour) if p is not None else None for _, p in exist]
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
