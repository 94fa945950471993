"""How much can token selection gain on a backbone? Accuracy of the evidence oracle against random at equal K.

The evidence oracle (:mod:`stepprune.methods.evidence_oracle`) keeps each question's evidence patches first and
fills up with random's own draw, so at each budget the two differ only in the evidence. The gap between them is
the most any selector could gain over random at that K on this backbone; vanilla and blind bracket it. The
``image-evidence`` rows keep the union of the evidence of every question on the image instead (the objects and text
that any question asks about), whichever question is asked: the most a selector that does not read the question can
learn. Greedy answers scored per family by SynthVQA's rules (``stepprune.benchmarks.synthvqa.aggregate``), with the
evidence recall (the share of the question's own evidence kept) and the distractor share (the share of the kept
tokens on other questions' evidence about the image, :func:`stepprune.evaluation.distractor_share`), one JSON line
per row.

``--shares`` and ``--fills`` add evidence-oracle rows that keep only a share of the question's evidence and fill
from the background or from the distractors first (``EvidenceConfig.share`` / ``fill``): which selections pay, at
the recall a trained selector reaches.

    python jobs/bench_selection_headroom.py                                  # 480 validation questions, K 16 64 128
    python jobs/bench_selection_headroom.py --items 2400 --budgets 16 64 128 192 --folder data/synthvqa/native/val
    python jobs/bench_selection_headroom.py --budgets 16 --shares 0 0.25 0.5 1 --fills background distractors
    python jobs/bench_selection_headroom.py --budgets 16 --selectors runs/embedded/final/selector   # a trained one

``--selectors`` adds a row per trained selector checkpoint (its own K, reported as ``kept``), to set what it keeps
against the oracles.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

import torch  # noqa: E402

import stepprune  # noqa: E402
from stepprune.benchmarks import synthvqa  # noqa: E402
from stepprune.checkpoint import load_checkpoint  # noqa: E402
from stepprune.evaluation import distractor_share, predict, token_recall  # noqa: E402
from stepprune.methods.evidence_oracle import EvidenceConfig, EvidenceOracle, read_evidence  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="checkpoints/synthvqa-llava-tiny")
    parser.add_argument("--folder", default="data/synthvqa/native/val", help="a SynthVQA native split folder")
    parser.add_argument("--items", type=int, default=480)
    parser.add_argument("--budgets", type=int, nargs="*", default=[16, 64, 128])
    parser.add_argument("--selectors", nargs="*", default=[], help="trained selector checkpoint folders")
    parser.add_argument("--shares", type=float, nargs="*", default=[],
                        help="extra evidence-oracle rows keeping this share of the question's evidence")
    parser.add_argument("--fills", nargs="*", default=[], choices=["random", "background", "distractors"],
                        help="the fills of those rows (default: random)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    questions = Path(args.folder) / "questions.jsonl"
    if not questions.is_file():
        sys.exit(f"{questions} does not exist: generate SynthVQA first (python jobs/prepare_data.py)")
    adapter = stepprune.load_backbone(args.backbone)
    items = synthvqa.load(args.folder, limit=args.items)
    methods = [("vanilla", None, stepprune.build_method("vanilla")), ("blind", 0, stepprune.build_method("blind"))]
    for k in args.budgets:
        methods += [("random", k, stepprune.build_method("random", budget=k)),
                    ("evidence", k, EvidenceOracle(EvidenceConfig(budget=k, questions=str(questions)))),
                    ("image-evidence", k,
                     EvidenceOracle(EvidenceConfig(budget=k, questions=str(questions), scope="image")))]
        for fill in args.fills or (["random"] if args.shares else []):
            for share in args.shares or [1.0]:
                methods.append((f"evidence share={share:g} fill={fill}", k, EvidenceOracle(
                    EvidenceConfig(budget=k, questions=str(questions), share=share, fill=fill))))
    methods += [(path, None, load_checkpoint(path, adapter)) for path in args.selectors]
    image_evidence = read_evidence(questions, scope="image")
    pct = lambda v: None if v is None else round(100 * v, 1)  # noqa: E731
    for name, k, method in methods:
        preds = predict(stepprune.PrunedVLM(adapter, method), items, batch_size=16, max_new_tokens=8)
        table = synthvqa.aggregate(items, [p.answer for p in preds])
        families = {f: round(100 * v, 1) for f, v in table.items() if "/" not in f and f != synthvqa.HEADLINE}
        recall, distractors = token_recall(items, preds), distractor_share(items, preds, image_evidence)
        print(json.dumps({"method": name, "budget": k, "items": len(items),
                          "kept": round(sum(p.kept for p in preds) / len(preds), 1),
                          "overall": round(100 * table[synthvqa.HEADLINE], 1), "evidence_recall": pct(recall),
                          "distractors": pct(distractors), **families}), flush=True)


if __name__ == "__main__":
    main()
