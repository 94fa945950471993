"""Where does the backbone look when it answers? Its answer slot's attention against SynthVQA's evidence patches.

For held-out SynthVQA questions, the unpruned backbone answers greedily (scored by the official rules, as
``jobs/evaluate_backbone.py`` scores them) and the last prompt token's head-mean attention over the visual tokens is
read at every decoder layer (``stepprune/answer_attention.py``). Questions with evidence (an existence question
answered "no" has none) give, per family:

* the evidence mass per layer: the share of the answer slot's attention that lands on the question's evidence
  patches; and, at ``--layer``, the share on other questions' evidence about the same image (distractors);
* accuracy by that evidence mass at ``--layer`` (bins): where the answer is right whenever the mass is high and
  wrong when it is low, the family is limited by finding the object (retrieval), not by reading it;
* the evidence mass by the number of objects in the scene;
* for attribute questions (one referent named by a phrase, "the large star"), where the attention at ``--layer``
  goes: the referent's evidence, other objects sharing some of the named attributes, objects sharing none, and
  background, as mass and as mass per patch (``stepprune/data/synthvqa/referents.py``). A model that matches the
  whole phrase puts far more per patch on the evidence than on the partial matches; one that matches a single
  word spreads it over them.

This is what the backbone-pretraining recipe's grounding term (``stage2.ground_layer``) trains, measured on the
evaluation path; it guides recipe work on issue 4's accuracy target.

``--sharpen F`` multiplies the query projection of ``--layer`` by F in memory first (a softmax F times as sharp in
that layer): if the lookup only lacked contrast, the evidence mass would rise with it.

    python jobs/bench_backbone_grounding.py --items 960 --layer 1
    python jobs/bench_backbone_grounding.py --items 480 --layer 1 --sharpen 3
"""

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import require_synthvqa, synthvqa_bench_parser  # noqa: E402

MASS_BINS = (0.0, 0.2, 0.5, 0.8)
OBJECT_BINS = (1, 6, 11, 16)


def _bin(value: float, edges: tuple) -> int:
    return max((i for i, e in enumerate(edges) if value >= e), default=0)


def _label(edges: tuple, i: int, top: str) -> str:
    return f"[{edges[i]:g},{edges[i + 1]:g})" if i + 1 < len(edges) else f"[{edges[i]:g},{top}]"


def _binned_table(title: str, groups: dict[str, list], edges: tuple, top: str, key, value, fmt: str) -> None:
    """Prints, per group (row), the mean of ``value(r)`` and the count of the rows r whose ``key(r)`` falls in
    each bin of ``edges`` (columns)."""
    print(f"\n{title}")
    print(f"{'family':12s} " + " ".join(f"{_label(edges, i, top):>14s}" for i in range(len(edges))))
    for name, rs in groups.items():
        cells = defaultdict(list)
        for r in rs:
            cells[_bin(key(r), edges)].append(value(r))
        print(f"{name:12s} " + " ".join(
            f"{sum(cells[i]) / len(cells[i]):{fmt}} ({len(cells[i]):4d})" if cells[i] else f"{'-':>14s}"
            for i in range(len(edges))))


def main(argv: list[str] | None = None) -> None:
    parser = synthvqa_bench_parser(__doc__.splitlines()[0], items=480)
    parser.add_argument("--layer", type=int, default=1, help="decoder layer of the by-mass tables")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sharpen", type=float, default=1.0,
                        help="multiply --layer's query projection by this first (1: the backbone as it is)")
    args = parser.parse_args(argv)
    require_synthvqa(parser, args.folder)
    import torch

    import stepprune
    from stepprune.answer_attention import answer_slot_attention
    from stepprune.benchmarks import synthvqa
    from stepprune.data.synthvqa.native import read_questions, read_scenes
    from stepprune.data.synthvqa.referents import GROUPS, attribute_match_groups
    from stepprune.evaluation import predict
    from stepprune.methods.evidence_oracle import read_evidence

    torch.set_num_threads(args.threads)
    adapter = stepprune.load_backbone(args.backbone)
    if not 0 <= args.layer < adapter.num_layers:
        parser.exit(2, f"--layer must be in 0..{adapter.num_layers - 1}\n")
    if args.sharpen != 1.0:
        with torch.no_grad():
            q_proj = adapter.text_model.layers[args.layer].self_attn.q_proj
            q_proj.weight.mul_(args.sharpen)
            if q_proj.bias is not None:
                q_proj.bias.mul_(args.sharpen)
    items = synthvqa.load(args.folder, limit=args.items)
    image_evidence = read_evidence(Path(args.folder) / "questions.jsonl", scope="image")
    records = {r["qid"]: r for r in read_questions(args.folder)}
    scenes = read_scenes(args.folder)
    # attribute questions: (mass, patches) per referent group at --layer
    match_rows: list[dict[str, tuple[float, int]]] = []
    preds = predict(stepprune.PrunedVLM(adapter, stepprune.build_method("vanilla")), items,
                    batch_size=args.batch_size, max_new_tokens=16)
    # per question with evidence: (family, right, mass per layer, distractor mass at --layer, objects)
    rows: list[tuple[str, float, list[float], float, int]] = []
    for start in range(0, len(items), args.batch_size):
        chunk = items[start: start + args.batch_size]
        att = answer_slot_attention(adapter, adapter.prepare([it.load_image() for it in chunk],
                                                             [it.prompt for it in chunk]))  # (B, layers, N)
        for b, it in enumerate(chunk):
            own = sorted(set(it.meta["evidence"]))
            if not own or it.meta["family"] == "describe":
                continue
            others = sorted(set(image_evidence.get(it.qid, [])) - set(own))
            right = synthvqa.score_one(preds[start + b].answer, it)
            mass = att[b][:, own].sum(dim=-1).tolist()
            rows.append((it.meta["family"], right, mass, float(att[b, args.layer, others].sum()),
                         int(it.meta["n_objects"])))
            rec = records[it.qid]
            groups = attribute_match_groups(scenes[rec["image_id"]], rec) if it.meta["family"] == "attribute" \
                else None
            if groups is not None:
                match_rows.append({g: (float(att[b, args.layer, ps].sum()), len(ps)) for g, ps in groups.items()})
    if not rows:
        parser.exit(1, "no question with evidence among the items read\n")
    layers = adapter.num_layers
    sharpened = f" (layer {args.layer}'s queries x{args.sharpen:g})" if args.sharpen != 1.0 else ""
    print(f"{args.backbone}{sharpened}: {len(rows)} questions with evidence of {len(items)} read from {args.folder}")
    print(f"\nevidence mass of the answer slot's attention per layer (distractors: other questions' evidence "
          f"about the image, layer {args.layer})")
    print(f"{'family':12s} {'n':>5s} {'acc %':>6s} " + " ".join(f"{'L' + str(i):>6s}" for i in range(layers))
          + f" {'distr.':>7s}")
    by_family: dict[str, list] = defaultdict(list)
    for r in rows:
        by_family[r[0]].append(r)
    groups = {fam: rows if fam == "all" else by_family[fam] for fam in [*sorted(by_family), "all"]}
    for fam, rs in groups.items():
        acc = 100 * sum(r[1] for r in rs) / len(rs)
        means = [sum(r[2][i] for r in rs) / len(rs) for i in range(layers)]
        print(f"{fam:12s} {len(rs):5d} {acc:6.1f} " + " ".join(f"{m:6.3f}" for m in means)
              + f" {sum(r[3] for r in rs) / len(rs):7.3f}")
    _binned_table(f"accuracy % (questions) by the layer-{args.layer} evidence mass", groups, MASS_BINS, "1",
                  lambda r: r[2][args.layer], lambda r: 100 * r[1], "7.1f")
    _binned_table(f"layer-{args.layer} evidence mass (questions) by objects in the scene", groups, OBJECT_BINS, "..",
                  lambda r: r[4], lambda r: r[2][args.layer], "7.3f")
    if match_rows:
        _match_table(match_rows, args.layer, GROUPS)


def _match_table(rows: list[dict[str, tuple[float, int]]], layer: int, groups: tuple[str, ...]) -> None:
    """Prints the attribute questions' layer-``layer`` attention by referent group: mean mass, mean patches, and
    mass per patch (total mass over total patches)."""
    n = len(rows)
    print(f"\nattribute questions ({n}): layer-{layer} attention by how patches relate to the named object "
          "(all/some/none: other objects sharing all/some/none of the attributes the question names)")
    print(f"{'':16s} " + " ".join(f"{g:>10s}" for g in groups))
    mass = [sum(r[g][0] for r in rows) for g in groups]
    patches = [sum(r[g][1] for r in rows) for g in groups]
    print(f"{'mass':16s} " + " ".join(f"{m / n:10.3f}" for m in mass))
    print(f"{'patches':16s} " + " ".join(f"{c / n:10.1f}" for c in patches))
    print(f"{'mass per patch':16s} " + " ".join(f"{m / c:10.4f}" if c else f"{'-':>10s}"
                                              for m, c in zip(mass, patches)))


if __name__ == "__main__":
    main()
