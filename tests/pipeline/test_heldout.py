"""The held-out check's per-method results: accuracy, kept tokens and the evidence token recall."""

from pathlib import Path

import pytest

import stepprune
from pipeline.heldout import evaluate_methods
from stepprune.benchmarks import synthvqa

BACKBONE = Path(__file__).resolve().parents[2] / "checkpoints" / "synthvqa-llava-tiny"


@pytest.fixture(scope="module")
def folder(synthvqa_test_folder):
    return synthvqa_test_folder


def test_token_recall_is_full_for_vanilla_and_the_kept_share_for_random(folder, one_thread):
    adapter = stepprune.load_backbone(BACKBONE)
    items = synthvqa.load(folder, limit=6)
    methods = [("vanilla", stepprune.build_method("vanilla")), ("random", stepprune.build_method("random", budget=24))]
    vanilla, rand = evaluate_methods(adapter, methods, str(folder), max_items=6, batch_size=3, max_new_tokens=1)
    assert vanilla.token_recall == 1.0 and vanilla.mean_kept == 576.0
    # random's recall, recomputed from its own selection of the same questions
    prompt = adapter.prepare([it.load_image() for it in items], [it.prompt for it in items],
                             keys=[it.qid for it in items])
    kept = stepprune.PrunedVLM(adapter, methods[1][1]).generate(prompt, max_new_tokens=1).kept_index
    shares = [sum(e in set(k) for e in it.meta["evidence"]) / len(it.meta["evidence"])
              for k, it in zip(kept, items) if it.meta["evidence"]]
    assert shares and rand.token_recall == pytest.approx(sum(shares) / len(shares))
    assert rand.token_recall < 1.0 and rand.mean_kept == 24.0


def test_the_distractor_share_is_measured_given_the_image_evidence(folder, one_thread):
    from stepprune.methods.evidence_oracle import EvidenceConfig, EvidenceOracle, read_evidence

    adapter = stepprune.load_backbone(BACKBONE)
    union = read_evidence(folder / "questions.jsonl", scope="image")
    items = synthvqa.load(folder, limit=6)
    questions = str(folder / "questions.jsonl")
    methods = [("vanilla", stepprune.build_method("vanilla")),
               ("background", EvidenceOracle(EvidenceConfig(budget=24, questions=questions, fill="background"))),
               ("distractors", EvidenceOracle(EvidenceConfig(budget=24, questions=questions, fill="distractors")))]
    vanilla, background, distractors = evaluate_methods(adapter, methods, str(folder), max_items=6, batch_size=3,
                                                        max_new_tokens=1, image_evidence=union)
    # vanilla keeps every patch, so its share is each question's other-question patches over 576
    shares = [len(set(union[it.qid]) - set(it.meta["evidence"])) / 576 for it in items if it.meta["evidence"]]
    assert vanilla.distractor_share == pytest.approx(sum(shares) / len(shares))
    assert background.distractor_share == 0.0 < distractors.distractor_share
    assert evaluate_methods(adapter, methods[:1], str(folder), max_items=2, batch_size=2,
                            max_new_tokens=1)[0].distractor_share is None
