"""Which side of the backbone's lookup lacks the question's description? Fresh lookups between its representations.

For SynthVQA's attribute questions ("what colour is the large star?": one object named by a phrase), the bench
caches, on the unpruned backbone, the projected visual tokens, the visual tokens' state entering decoder layer
``--layer`` and the answer slot's state entering it (the last prompt token's, whose next token is the answer),
fits a fresh bilinear lookup (``stepprune/lookup_probe.py``) by ``-log`` evidence mass on ``--train-folder``'s
questions, and prints the evidence mass each reaches on ``--folder``'s, by the number of objects in the scene:

* description -> projected tokens: queried by the bag of words the question names its object by;
* description -> layer-L visual state: the same query against what the layer's keys are computed from;
* answer slot -> layer-L visual state: the layer's own inputs on both sides;

and, for reference, the backbone's own layer-L answer-slot attention (head mean) on the evidence. When the first
two are high and the third stalls near the backbone's own, the visual side can be matched and the answer slot does
not hold the description when the lookup runs (``docs/results/backbone_grounding.md``).

    python jobs/bench_lookup_probe.py --layer 1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a fresh clone without installing

from pipeline.cli import require_synthvqa, synthvqa_bench_parser  # noqa: E402

OBJECT_BUCKETS = ((1, 5), (6, 10), (11, 20))


def _attribute_questions(folder: str, limit: int) -> list[dict]:
    """The first ``limit`` records of ``folder`` that are attribute questions with evidence and a named object."""
    from stepprune.data.synthvqa.native import read_questions
    from stepprune.data.synthvqa.referents import named_attributes

    out = []
    for rec in read_questions(folder)[:limit]:
        selects = [p for p in (rec.get("extra") or {}).get("program") or [] if p.get("operation") == "select"]
        if rec["family"] == "attribute" and rec["evidence"] and len(selects) == 1 \
                and named_attributes(selects[0]["argument"]):
            out.append(dict(rec, named=named_attributes(selects[0]["argument"])))
    return out


def _cache(adapter, folder: str, records: list[dict], layer: int, vocab: list[str], batch_size: int) -> dict:
    """Per question: projected tokens ``v0`` (M, N, D), layer-``layer`` visual state ``vl`` (M, N, D), answer
    slot's layer-``layer`` state ``slot`` (M, D), named-word bag ``bag`` (M, W), evidence (M, N) bool, objects (M,)
    and the backbone's own head-mean layer-``layer`` evidence mass ``own`` (M,)."""
    import torch
    from PIL import Image

    from stepprune.answer_attention import answer_slot_attention

    model = adapter.model
    out: dict[str, list] = {k: [] for k in ("v0", "vl", "slot", "bag", "evidence", "objects", "own")}
    for start in range(0, len(records), batch_size):
        chunk = records[start: start + batch_size]
        prompt = adapter.prepare([Image.open(Path(folder) / r["image"]).convert("RGB") for r in chunk],
                                 [r["prompt"] for r in chunk])
        with torch.no_grad():
            hidden = model(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                           position_ids=prompt.positions, **prompt.pixel_inputs, output_hidden_states=True
                           ).hidden_states
        att = answer_slot_attention(adapter, prompt)[:, layer]  # (B, N)
        is_image = prompt.input_ids == model.config.image_token_id
        mask = prompt.attention_mask
        last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)  # the last prompt token, whatever the padding side
        for b, rec in enumerate(chunk):
            out["v0"].append(hidden[0][b][is_image[b]].half())
            out["vl"].append(hidden[layer][b][is_image[b]].half())
            out["slot"].append(hidden[layer][b, last[b]].float())
            bag = torch.zeros(len(vocab))
            bag[[vocab.index(v) for v in rec["named"].values()]] = 1.0
            out["bag"].append(bag)
            ev = torch.zeros(is_image[b].sum(), dtype=torch.bool)
            ev[rec["evidence"]] = True
            out["evidence"].append(ev)
            out["objects"].append(int(rec["scene_stats"]["n_objects"]))
            out["own"].append(float(att[b][ev].sum()))
    return {k: torch.stack(v) if k in ("v0", "vl", "slot", "bag", "evidence") else torch.tensor(v)
            for k, v in out.items()}


def _row(name: str, mass, objects) -> str:
    cells = [f"{float(mass.mean()):6.3f}"]
    for lo, hi in OBJECT_BUCKETS:
        sel = (objects >= lo) & (objects <= hi)
        cells.append(f"{float(mass[sel].mean()):6.3f}" if bool(sel.any()) else f"{'-':>6s}")
    return f"{name:44s} " + " ".join(f"{c:>8s}" for c in cells)


def main(argv: list[str] | None = None) -> None:
    parser = synthvqa_bench_parser(__doc__.splitlines()[0], items=2400)
    parser.add_argument("--train-folder", default="data/synthvqa/native/train",
                        help="the SynthVQA split the lookups are fitted on")
    parser.add_argument("--train-items", type=int, default=12000, help="questions read from --train-folder")
    parser.add_argument("--layer", type=int, default=1, help="the decoder layer whose inputs are probed")
    parser.add_argument("--steps", type=int, default=750, help="optimizer steps per lookup (batch 32)")
    parser.add_argument("--dim", type=int, default=32, help="the lookups' width")
    parser.add_argument("--batch-size", type=int, default=32, help="questions per backbone forward pass")
    args = parser.parse_args(argv)
    require_synthvqa(parser, args.folder)
    require_synthvqa(parser, args.train_folder)
    import torch

    import stepprune
    from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPES, SIZE_NAMES
    from stepprune.lookup_probe import LookupProbe, evidence_mass, fit_lookup

    torch.set_num_threads(args.threads)
    adapter = stepprune.load_backbone(args.backbone)
    if not 0 <= args.layer < adapter.num_layers:
        parser.exit(2, f"--layer must be in 0..{adapter.num_layers - 1}\n")
    train_recs = _attribute_questions(args.train_folder, args.train_items)
    val_recs = _attribute_questions(args.folder, args.items)
    if not train_recs or not val_recs:
        parser.exit(1, "no attribute question with evidence among the items read\n")
    vocab = [*COLOR_NAMES, *SHAPES, *SIZE_NAMES]
    train = _cache(adapter, args.train_folder, train_recs, args.layer, vocab, args.batch_size)
    val = _cache(adapter, args.folder, val_recs, args.layer, vocab, args.batch_size)
    width = train["v0"].shape[-1]
    L = args.layer
    print(f"{args.backbone}: lookups fitted on {len(train_recs)} attribute questions of {args.train_folder} "
          f"({args.steps} steps, batch 32), evidence mass on {len(val_recs)} of {args.folder}")
    print(f"\n{'lookup (query -> keys)':44s} " + " ".join(
        f"{c:>8s}" for c in ["all", *(f"{lo}-{hi} obj" for lo, hi in OBJECT_BUCKETS)]))
    print(_row(f"backbone's own layer {L} (head mean)", val["own"], val["objects"]))
    for name, query, keys, norm in (("description -> projected tokens", "bag", "v0", False),
                                    (f"description -> layer-{L} visual state", "bag", "vl", False),
                                    (f"answer slot -> layer-{L} visual state", "slot", "vl", True)):
        torch.manual_seed(0)
        probe = LookupProbe(width, train[query].shape[-1], dim=args.dim, query_norm=norm)
        fit_lookup(probe, train[keys], train[query], train["evidence"], args.steps)
        with torch.no_grad():
            mass = evidence_mass(probe(val[keys], val[query]), val["evidence"])
        print(_row(name, mass, val["objects"]), flush=True)


if __name__ == "__main__":
    main()
