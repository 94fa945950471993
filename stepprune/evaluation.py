"""Pruned greedy answers for benchmark items, with what each sample kept and how long it took.

Used by ``jobs/evaluate.py``, the evaluation-matrix actors and the training job's held-out check. Pure PyTorch:
the caller decides where it runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from stepprune.benchmarks.base import BenchmarkItem
from stepprune.pruned_vlm import PrunedVLM


@dataclasses.dataclass
class Prediction:
    """One answer.

    Attributes:
        qid: the item's id.
        prompt: the exact text the model was asked (the benchmark's prompt string).
        answer: the decoded, stripped answer.
        kept: visual tokens handed to the LLM (after pre-LLM selection).
        kept_index: the original visual indices handed to the LLM.
        final_index: the original visual indices that reach the last LLM layer (and stay cached to the end).
        visual_per_layer: visual tokens entering each LLM layer at prefill.
        latency_ms: the sample's share of its batch's wall time (vision + selection + prefill + decoding).
        cached_visual_per_layer: visual KV entries left in each LLM layer's cache at the end of generation
            (below ``visual_per_layer`` only for decode-time methods, which evict while generating).
    """

    qid: str
    prompt: str
    answer: str
    kept: int
    kept_index: list[int]
    final_index: list[int]
    visual_per_layer: list[int]
    latency_ms: float
    cached_visual_per_layer: list[int] = dataclasses.field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def predict(vlm: PrunedVLM, items: Sequence[BenchmarkItem], *, batch_size: int = 16, max_new_tokens: int = 16,
            on_batch: Callable[[int, int], None] | None = None) -> list[Prediction]:
    """Answers ``items`` in batches (order preserved).

    Args:
        vlm: backbone + method.
        items: benchmark items (their images are decoded lazily, one batch at a time).
        batch_size: samples per generate call.
        max_new_tokens: generation cap.
        on_batch: progress callback ``(done, total)``.
    """
    adapter = vlm.adapter
    out: list[Prediction] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start: start + batch_size]
        images = [it.load_image() for it in chunk]
        prompt = adapter.prepare(images, [it.prompt for it in chunk], keys=[it.qid for it in chunk])
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen = vlm.generate(prompt, max_new_tokens=max_new_tokens)
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        per_item = (time.perf_counter() - t0) * 1000 / len(chunk)
        for b, it in enumerate(chunk):
            out.append(Prediction(it.qid, it.prompt, gen.texts[b], int(gen.kept[b]), gen.kept_index[b],
                                  gen.final_index[b], gen.visual_per_layer[b].tolist(), per_item,
                                  gen.cached_visual_per_layer[b].tolist()))
        if on_batch is not None:
            on_batch(len(out), len(items))
    return out


def token_recall(items: Sequence[BenchmarkItem], predictions: Sequence[Prediction]) -> float | None:
    """Mean share of each item's evidence patches (``meta["evidence"]``) that reach the LLM's last layer (kept
    by pre-LLM selection and surviving in-LLM drops); items without evidence are skipped. None when no item
    carries evidence."""
    shares = []
    for it, p in zip(items, predictions):
        evidence = it.meta.get("evidence") if it.meta else None
        if evidence:
            kept = set(p.final_index)
            shares.append(sum(e in kept for e in evidence) / len(evidence))
    return float(sum(shares) / len(shares)) if shares else None


def distractor_share(items: Sequence[BenchmarkItem], predictions: Sequence[Prediction],
                     image_evidence: Mapping[str, Sequence[int]]) -> float | None:
    """Mean share of each item's final tokens (``final_index``) that lie on *another* question's evidence about the
    same image and not on its own: the patches of objects and text the question does not ask about.

    Why: on the tiny SynthVQA backbone such patches cost accuracy. At K = 16, a random quarter of each question's
    own evidence filled up from the background scored 51.7 % against random's 37.2 %; the same evidence filled up
    with other questions' patches first scored 40.6 % (``docs/results/selector_training.md``). A selector can keep
    the evidence (recall) and still lose, when it also keeps distractors.

    Args:
        items: benchmark items with ``meta["evidence"]`` (the question's own patches).
        predictions: one per item, with ``final_index`` (the token indices that reach the LLM's last layer).
        image_evidence: qid -> the union of the evidence of every question about the item's image
            (:func:`stepprune.methods.evidence_oracle.read_evidence` with ``scope="image"``).

    Returns:
        The mean over items with evidence, an entry in ``image_evidence`` and at least one kept token; None when
        there is no such item.
    """
    shares = []
    for it, p in zip(items, predictions):
        evidence = it.meta.get("evidence") if it.meta else None
        union = image_evidence.get(it.qid)
        kept = set(p.final_index)
        if evidence and union is not None and kept:
            others = set(union) - set(evidence)
            shares.append(len(kept & others) / len(kept))
    return float(sum(shares) / len(shares)) if shares else None
