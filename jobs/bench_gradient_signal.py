"""Does the LM loss know where the answer is? The answer NLL's gradient on a uniform per-token gate, on SynthVQA.

For held-out SynthVQA questions (with their answers as labels) every visual token is gated at g0 and token i's
saliency is -dL/dg_i (``stepprune/gate_saliency.py``). Prints, per gate and g0:

* the AUC of the saliency separating each question's evidence patches from the rest, overall and per family;
* the answer NLL when the LLM sees only the top-K tokens by saliency, against random K tokens and the evidence
  oracle at the same K (evidence first, then random's fill), and all tokens;
* where the top-K by saliency lies: its share on the question's evidence, on other questions' evidence about the
  same image (distractors) and on the rest, and its evidence recall. The saliency is what
  ``jobs/warm_start_selector.py --teacher saliency`` distils; a teacher as often on distractors as on the evidence
  cannot teach a selector to read the question.

The saliency reads the answer, so it is an upper bound on what a selector's training signal can carry, not a method.

    python jobs/bench_gradient_signal.py --items 320 --budgets 4,16,64 --g0 0.03,0.5 --gates attention,noise
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import require_synthvqa, synthvqa_bench_parser  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = synthvqa_bench_parser(__doc__.splitlines()[0], items=320)
    parser.add_argument("--budgets", default="4,16,64")
    parser.add_argument("--g0", default="0.03,0.5", help="uniform gate values the gradient is taken at")
    parser.add_argument("--gates", default="attention,noise")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    require_synthvqa(parser, args.folder)
    import torch

    import stepprune
    from stepprune.backbones.types import VisualTokens
    from stepprune.benchmarks import synthvqa
    from stepprune.gate_saliency import auc, gate_saliency
    from stepprune.methods.evidence_oracle import evidence_first, read_evidence
    from stepprune.methods.token_rows import pad_index_rows
    from stepprune.train_gap import answer_conversations

    torch.set_num_threads(args.threads)
    budgets = [int(k) for k in args.budgets.split(",")]
    settings = [(gate, float(g0)) for gate in args.gates.split(",") for g0 in args.g0.split(",")]
    adapter = stepprune.load_backbone(args.backbone)
    # describe answers are long captions: their NLL would dominate the means; the headline excludes them as
    # synthvqa.aggregate does
    items = [it for it in synthvqa.load(args.folder, limit=args.items) if it.meta["family"] != "describe"]
    image_evidence = read_evidence(Path(args.folder) / "questions.jsonl", scope="image")
    gen, gen_fill, gen_noise = (torch.Generator().manual_seed(s) for s in (0, 1, 2))
    where: dict[tuple, list[tuple[float, float, float]]] = {}  # (setting, K) -> (on evidence, on distractors, recall)
    aucs: dict[tuple, list[tuple[str, float]]] = {s: [] for s in settings}
    nll: dict[tuple, list[float]] = {}
    for i in range(0, len(items), args.batch_size):
        chunk = items[i: i + args.batch_size]
        prompt = adapter.prepare_conversations([it.load_image() for it in chunk], answer_conversations(chunk),
                                               keys=[it.qid for it in chunk])
        with torch.no_grad():
            vision = adapter.vision_features(prompt)
            projected = adapter.project(vision.tokens)
        n = projected.shape[1]

        def answer_nll(index):
            visual = VisualTokens.gather(projected, *pad_index_rows(index))
            with torch.no_grad():
                return adapter.lm_loss(adapter.forward(adapter.splice(prompt, visual, vision, "original")),
                                       per_sample=True).tolist()

        saliency = {s: gate_saliency(adapter, prompt, s[1], s[0], generator=gen_noise) for s in settings}
        for s, sal in saliency.items():
            for b, it in enumerate(chunk):
                positive = torch.zeros(n, dtype=torch.bool)
                positive[list(set(it.meta["evidence"]))] = True
                a = auc(sal[b], positive)
                if a is not None:
                    aucs[s].append((it.meta["family"], a))
        nll.setdefault(("all tokens", n), []).extend(answer_nll([torch.arange(n) for _ in chunk]))
        for k in budgets:
            perms = [torch.randperm(n, generator=gen) for _ in chunk]
            nll.setdefault(("random", k), []).extend(answer_nll([p[:k].sort().values for p in perms]))
            nll.setdefault(("evidence oracle", k), []).extend(answer_nll(
                [evidence_first(it.meta["evidence"], p, k, gen_fill) for it, p in zip(chunk, perms)]))
            for s, sal in saliency.items():
                top = [sal[b].topk(k).indices.sort().values for b in range(len(chunk))]
                nll.setdefault((f"top-K saliency ({s[0]}, g0={s[1]:g})", k), []).extend(answer_nll(top))
                for it, t in zip(chunk, top):
                    t, ev = set(t.tolist()), set(it.meta["evidence"])
                    others = set(image_evidence.get(it.qid, [])) - ev
                    if ev:
                        where.setdefault((s, k), []).append((len(t & ev) / k, len(t & others) / k,
                                                             len(t & ev) / len(ev)))
        print(f"[gradient-signal] {min(i + args.batch_size, len(items))}/{len(items)} questions", flush=True)
    print(f"\nAUC of the saliency for each question's evidence patches ({len(items)} questions, describe excluded):")
    for s in settings:
        fams = sorted({f for f, _ in aucs[s]})
        per = "  ".join(f"{f} {statistics.fmean(a for ff, a in aucs[s] if ff == f):.3f}" for f in fams)
        print(f"  {s[0]:<9} g0={s[1]:<5g} all {statistics.fmean(a for _, a in aucs[s]):.3f}  |  {per}")
    print("\nwhere the top-K by saliency lies (share of its K on the question's evidence / on other questions' "
          "evidence about the image / evidence recall):")
    for (s, k), rows in where.items():
        on, dis, rec = (100 * statistics.fmean(r[i] for r in rows) for i in range(3))
        print(f"  K={k:<4d} {s[0]:<9} g0={s[1]:<5g} evidence {on:.1f} %  distractors {dis:.1f} %  recall {rec:.1f} %")
    print("\nanswer NLL (lower is better) with the LLM seeing K visual tokens:")
    for (name, k), values in sorted(nll.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"  K={k:<4d} {name:<38} {statistics.fmean(values):.3f}  (n={len(values)})")


if __name__ == "__main__":
    main()
