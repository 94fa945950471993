"""The held-out check a training job ends with: accuracy of the trained selector against vanilla and against
random pruning at the same mean number of kept tokens, on a held-out split of a benchmark folder.

Runs in the job's driver process on a modest number of items (the full evaluation matrix is ``jobs/eval_matrix.py``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np
import torch

import stepprune
from stepprune.benchmarks import get_benchmark
from stepprune.evaluation import distractor_share, token_recall


@dataclasses.dataclass
class HeldOutResult:
    """Accuracy and mean kept tokens of one method on the held-out items, and on items that record their evidence
    patches (SynthVQA) the token recall: the mean share of each item's evidence that reaches the LLM's last layer
    (:func:`stepprune.evaluation.token_recall`; None without evidence). Random's recall at the same K is chance.
    Given the image-scope evidence, also the distractor share: the mean share of the kept tokens that lie on other
    questions' evidence about the same image (:func:`stepprune.evaluation.distractor_share`)."""

    method: str
    accuracy: float
    mean_kept: float
    items: int
    seconds: float
    kept: list[int]
    token_recall: float | None = None
    distractor_share: float | None = None


def evaluate_methods(adapter: stepprune.BackboneAdapter, methods: Sequence[tuple[str, stepprune.PruningMethod]],
                     folder: str, *, benchmark: str = "synthvqa", max_items: int = 400, batch_size: int = 16,
                     max_new_tokens: int = 8,
                     image_evidence: Mapping[str, Sequence[int]] | None = None) -> list[HeldOutResult]:
    """Greedy answers of each (label, method) on the first ``max_items`` items, scored by the benchmark;
    ``image_evidence`` (qid -> the image's evidence union) adds the distractor share.

    The vision tower runs once per batch and every method answers from its features: the frozen tower's output
    does not depend on the method, and on the tiny backbone it is about a fifth of a pruned method's time. A
    method's ``seconds`` is its own share (its batches' selection, prefill and decoding), without the tower.
    """
    bench = get_benchmark(benchmark)
    items = bench.load(folder, limit=max_items)
    images = [it.load_image() for it in items]
    vlms = [stepprune.PrunedVLM(adapter, method) for _, method in methods]
    preds: list[list[str]] = [[] for _ in methods]
    kept: list[list[int]] = [[] for _ in methods]
    final: list[list] = [[] for _ in methods]
    seconds = [0.0 for _ in methods]
    for i in range(0, len(items), batch_size):
        chunk = items[i: i + batch_size]
        prompt = adapter.prepare(images[i: i + batch_size], [it.prompt for it in chunk], keys=[it.qid for it in chunk])
        with torch.no_grad():
            vision = adapter.vision_features(prompt)
        for m, vlm in enumerate(vlms):
            t0 = time.perf_counter()
            out = vlm.generate(prompt, max_new_tokens=max_new_tokens, vision=vision)
            seconds[m] += time.perf_counter() - t0
            preds[m].extend(out.texts)
            kept[m].extend(out.kept.tolist())
            final[m].extend(out.final_index)
    results = []
    for m, (label, _) in enumerate(methods):
        score = float(np.mean([bench.score_one(p, it) for p, it in zip(preds[m], items)]))
        finals = [SimpleNamespace(final_index=f) for f in final[m]]
        distractors = None if image_evidence is None else distractor_share(items, finals, image_evidence)
        results.append(HeldOutResult(label, score, float(np.mean(kept[m])), len(items), seconds[m], kept[m],
                                     token_recall(items, finals), distractors))
    return results


def train_gap(adapter: stepprune.BackboneAdapter, method: stepprune.PruningMethod, folder: str, *, step: int,
              benchmark: str = "synthvqa", max_items: int = 120) -> dict[str, dict[str, float]]:
    """The train/inference gap of a trained method on the first ``max_items`` held-out items: mean answer NLL per
    condition, overall and per family (:func:`stepprune.train_gap.summarise`). ``method`` must be a fresh copy
    (its training forward updates running statistics); ``step`` is the run's last optimizer step."""
    from stepprune.train_gap import answer_nll_rows, summarise

    items = get_benchmark(benchmark).load(folder, limit=max_items)
    return summarise(answer_nll_rows(stepprune.PrunedVLM(adapter, method), items, step))


def validation_metrics(adapter: stepprune.BackboneAdapter, method: stepprune.PruningMethod, items: list,
                       benchmark: str, *, batch_size: int, max_new_tokens: int, target_k: float | None,
                       k_weight: float) -> dict[str, float]:
    """Accuracy, mean kept tokens and the operating-point objective of a (training) method on ``items``.

    ``val_objective = val_accuracy - k_weight * |val_K_mean - target_k| / target_k`` (accuracy in [0, 1]),
    or the accuracy when there is no target.
    """
    from stepprune.evaluation import predict

    bench = get_benchmark(benchmark)
    was_training = method.training
    method.eval()
    try:
        preds = predict(stepprune.PrunedVLM(adapter, method), items, batch_size=batch_size,
                        max_new_tokens=max_new_tokens)
    finally:
        method.train(was_training)
    acc = float(np.mean([bench.score_one(p.answer, it) for p, it in zip(preds, items)]))
    k = float(np.mean([p.kept for p in preds]))
    objective = acc - k_weight * abs(k - target_k) / target_k if target_k else acc
    return {"val_accuracy": acc, "val_K_mean": k, "val_objective": objective}
