"""The train/inference gap of a trainable pruning method, measured as teacher-forced answer NLL per question.

A trainable method is optimised through its *training path* (for StepPrune: every visual token gated, noised and
denoised, Eqs. (12)-(14)), but deployed through its *inference path* (the hard subset only). When the LM can read
the image through the training path without the selection's help, the LM loss stops rewarding useful selections,
and a lower training loss need not mean a better selection. This module measures that directly, on held-out
questions, with the answer as the label:

* ``train_path``: the method's differentiable training forward at step ``step`` (what its LM loss optimises);
* ``selection``: the inference path, the LLM given only the method's selection (and its in-LLM hooks);
* ``random``: a uniformly random subset of the same size, per question (seeded);
* ``vanilla``: all visual tokens; ``blind``: none;
* ``evidence`` (only when every item records ``meta["evidence"]``, as SynthVQA's do): the question's evidence
  patches first (in random order, as many as fit), filled up with random others to the selection's size. It is an
  oracle selection at the same K: how much a selector could gain over ``random`` on this backbone.

Every value is the mean next-token NLL over the answer's tokens of one question (its own mean, whatever the
batch). Lower is better; ``selection`` above ``random`` means the selection hurts the LLM at deployment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stepprune.backbones.types import VisualTokens
from stepprune.methods.evidence_oracle import evidence_first
from stepprune.methods.token_rows import pad_index_rows
from stepprune.pruned_vlm import PrunedVLM

CONDITIONS = ("vanilla", "blind", "random", "evidence", "selection", "train_path")


def _answer_text(answer: Any) -> str:
    """The label text: the answer itself, or the first of a list of reference answers (VQA-style)."""
    if isinstance(answer, (list, tuple)):
        return str(answer[0])
    return str(answer)


def answer_conversations(items: Sequence[Any]) -> list[list[dict[str, str]]]:
    """One LLaVA-Instruct conversation per benchmark item: its prompt with the image marker, then its answer as
    the labelled turn (the first reference answer for VQA-style lists)."""
    return [[{"from": "human", "value": "<image>\n" + it.prompt}, {"from": "gpt", "value": _answer_text(it.answer)}]
            for it in items]


def answer_nll_rows(vlm: PrunedVLM, items: Sequence[Any], step: int, *, seed: int = 0,
                    batch_size: int = 16) -> list[dict[str, Any]]:
    """Per-question answer NLL under each of :data:`CONDITIONS`.

    Args:
        vlm: the backbone with the (trained) method. Its method runs its training forward, which may update
            running statistics (StepPrune's noise scale and k_bar EMA): pass a copy that is not used afterwards.
        items: benchmark items (``qid``, ``prompt``, ``answer``, ``load_image()``, ``meta['family']`` if any).
        step: the optimizer step the training path is evaluated at (the last one of the run: its schedules).
        seed: seeds the training path's noise and the random subsets.
        batch_size: questions per forward pass (each question's NLL is its own, whatever the batch).

    Returns:
        One dict per item: ``qid``, ``family``, ``kept`` (the selection's size) and one NLL per condition
        (``evidence`` only when every item has evidence).
    """
    adapter, method = vlm.adapter, vlm.method
    gen = torch.Generator().manual_seed(seed)
    gen_evidence = torch.Generator().manual_seed(seed + 1)  # its own stream: each item's draws are batch-free
    torch.manual_seed(seed)
    mode = method.position_mode_for(adapter.family)
    with_evidence = all("evidence" in (getattr(it, "meta", None) or {}) for it in items)
    rows = []
    for i in range(0, len(items), batch_size):
        chunk = items[i: i + batch_size]
        prompt = adapter.prepare_conversations([it.load_image() for it in chunk], answer_conversations(chunk),
                                               keys=[it.qid for it in chunk])
        with torch.no_grad():
            ctx = vlm.context(prompt)
            x, n = ctx.vision.tokens, ctx.vision.num_tokens  # (B, N, d_v), (B,) valid rows per image

            projected = adapter.project(x)

            def nll(visual: VisualTokens) -> list[float]:
                """Per-sample NLL with ``visual`` as the visual prefix (the method's position convention)."""
                return adapter.lm_loss(adapter.forward(adapter.splice(prompt, visual, ctx.vision, mode)),
                                       per_sample=True).tolist()

            def subset(index: list[torch.Tensor]) -> VisualTokens:
                """The projected visual tokens ``index[b]`` (1-D, sorted) of each sample."""
                return VisualTokens.gather(projected, *pad_index_rows([ix.to(x.device) for ix in index]))

            inputs, visual = vlm.llm_inputs(ctx)
            kept = visual.count.tolist()
            selection = adapter.lm_loss(adapter.forward(inputs, method.llm_hooks(ctx)), per_sample=True).tolist()
            vanilla = nll(adapter.keep_all(ctx.vision))
            blind = nll(subset([torch.arange(0) for _ in chunk]))
            perms = [torch.randperm(int(v), generator=gen) for v in n]
            random = nll(subset([p[:k].sort().values for p, k in zip(perms, kept)]))
            if with_evidence:
                evidence = nll(subset([evidence_first(it.meta["evidence"], p, k, gen_evidence)
                                       for it, p, k in zip(chunk, perms, kept)]))
            train_inputs, out = vlm.train_inputs(prompt, step)
            train = adapter.lm_loss(adapter.forward(train_inputs, biases=out.biases), per_sample=True).tolist()
        for b, it in enumerate(chunk):
            rows.append({"qid": it.qid, "family": (getattr(it, "meta", None) or {}).get("family", "all"),
                         "kept": int(kept[b]), "selection": selection[b], "vanilla": vanilla[b], "blind": blind[b],
                         "random": random[b], "train_path": train[b],
                         **({"evidence": evidence[b]} if with_evidence else {})})
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean NLL per condition (and mean kept tokens, ``n``) over all rows (``"all"``) and per family."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups["all"].append(r)
        groups[r["family"]].append(r)
    present = [c for c in CONDITIONS if all(c in r for r in rows)]
    return {name: {"n": float(len(g)), "kept": float(np.mean([r["kept"] for r in g])),
                   **{c: float(np.mean([r[c] for r in g])) for c in present}}
            for name, g in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0]))}


def render(summary: dict[str, dict[str, float]]) -> str:
    """A plain-text table of :func:`summarise`'s output (the conditions it has, in :data:`CONDITIONS` order)."""
    first = next(iter(summary.values()), {})
    conds = [c for c in CONDITIONS if c in first]
    head = f"{'family':<12}{'n':>5}{'kept':>7}" + "".join(f"{c:>12}" for c in conds)
    lines = [head]
    for name, s in summary.items():
        lines.append(f"{name:<12}{int(s['n']):>5}{s['kept']:>7.1f}" + "".join(f"{s[c]:>12.3f}" for c in conds))
    return "\n".join(lines)
