"""Held-out answer NLL of trained selector checkpoints: the training job's train/inference gap table, standalone.

For each checkpoint, every held-out question's mean answer NLL under the selector's training path, its inference
selection, random and the evidence oracle at the same K, vanilla and blind, per family (``stepprune/train_gap.py``,
the table the training job prints at its end). Lower is better. It tells whether the LM loss ranks a selection the
way accuracy does (``jobs/bench_selection_headroom.py --selectors`` gives the accuracy of the same checkpoints).

    python jobs/bench_answer_nll.py --items 160 --selectors runs/<name>/final/selector
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import require_synthvqa, synthvqa_bench_parser  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = synthvqa_bench_parser(__doc__.splitlines()[0], items=160)
    parser.add_argument("--selectors", nargs="+", required=True, help="trained selector checkpoint folders")
    args = parser.parse_args(argv)
    require_synthvqa(parser, args.folder)
    import torch

    import stepprune
    from stepprune.benchmarks import synthvqa
    from stepprune.checkpoint import load_checkpoint
    from stepprune.train_gap import answer_nll_rows, render, summarise

    torch.set_num_threads(args.threads)
    adapter = stepprune.load_backbone(args.backbone)
    # describe answers are 100+ token captions (scored by mention recall, outside the accuracy headline)
    items = [it for it in synthvqa.load(args.folder, limit=args.items) if it.meta["family"] != "describe"]
    for path in args.selectors:
        method = load_checkpoint(path, adapter)
        vlm = stepprune.PrunedVLM(adapter, method)  # every NLL is each question's own mean (train_gap)
        step = 10 ** 9  # the training path at the end of its schedules
        print(f"\n{path} ({len(items)} questions of {args.folder}; answer NLL, lower is better)")
        print(render(summarise(answer_nll_rows(vlm, items, step))), flush=True)


if __name__ == "__main__":
    main()
