"""What a trained StepPrune selector is taught: the LM loss's gradient on its own keep values g, by token class.

For held-out SynthVQA questions with their answers, runs each checkpoint's training forward (its own gate, at the
end of its schedules) and prints dL/dg (negative: more of that token lowers the answer's NLL) for the tokens it
keeps and leaves out, on the question's evidence, on other questions' evidence about the same image
("distractor"), or background; and the share of the total |dL/dg| held by the top 1 % of tokens
(``stepprune/selection_gradient.py``). The gradient reads the answers: a measurement, not a method.

    python jobs/bench_gate_gradient.py --items 48 --selectors runs/<name>/final/selector
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import require_synthvqa, synthvqa_bench_parser  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = synthvqa_bench_parser(__doc__.splitlines()[0], items=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loss-per", default="question", choices=["token", "question"])
    parser.add_argument("--selectors", nargs="+", required=True, help="trained StepPrune checkpoint folders")
    args = parser.parse_args(argv)
    require_synthvqa(parser, args.folder)
    questions = Path(args.folder) / "questions.jsonl"
    import torch

    import stepprune
    from stepprune.benchmarks import synthvqa
    from stepprune.checkpoint import load_checkpoint
    from stepprune.methods.evidence_oracle import read_evidence
    from stepprune.selection_gradient import CLASSES, concentration, gate_gradient, gradient_classes
    from stepprune.train_gap import answer_conversations

    torch.set_num_threads(args.threads)
    adapter = stepprune.load_backbone(args.backbone)
    union = read_evidence(questions, scope="image")
    items = [it for it in synthvqa.load(args.folder, limit=args.items)
             if it.meta["family"] != "describe" and it.meta.get("evidence")]
    for path in args.selectors:
        torch.manual_seed(0)  # the noise gate's draws
        vlm = stepprune.PrunedVLM(adapter, load_checkpoint(path, adapter), loss_per=args.loss_per)
        vlm.method.train()
        step = 10 ** 9  # past every schedule: alpha 1, beta and lambda at their final values
        classes: dict[str, list[float]] = {name: [] for name in CLASSES}
        for i in range(0, len(items), args.batch_size):
            chunk = items[i: i + args.batch_size]
            prompt = adapter.prepare_conversations([it.load_image() for it in chunk], answer_conversations(chunk))
            _, grad, hard = gate_gradient(vlm, prompt, step)
            evidence = [it.meta["evidence"] for it in chunk]
            others = [set(union[it.qid]) - set(it.meta["evidence"]) for it in chunk]
            for name, values in gradient_classes(grad, hard, evidence, others).items():
                classes[name].extend(values)
        everything = [v for values in classes.values() for v in values]
        print(f"\n{path} ({len(items)} questions of {args.folder}; dL/dg, negative = keeping more helps)")
        print(f"  top 1 % of tokens hold {100 * concentration(everything):.1f} % of the total |dL/dg|; "
              f"|dL/dg| median {statistics.median(abs(v) for v in everything):.2e}, "
              f"max {max(abs(v) for v in everything):.2e}")
        for name in CLASSES:
            v = classes[name]
            if v:
                print(f"  {name:<20} n {len(v):6d}  mean {statistics.fmean(v):+.2e}  median {statistics.median(v):+.2e}"
                      f"  share < 0 {sum(x < 0 for x in v) / len(v):.2f}  top-1 % share "
                      f"{100 * concentration(v):.1f} %")


if __name__ == "__main__":
    main()
