"""The evidence oracle: the question's evidence patches first, then random's own fill; and its evidence file."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import stepprune
from stepprune.benchmarks import synthvqa
from stepprune.methods.evidence_oracle import EvidenceConfig, EvidenceOracle, evidence_first, read_evidence

BACKBONE = Path(__file__).resolve().parents[3] / "checkpoints" / "synthvqa-llava-tiny"


@pytest.fixture(scope="module")
def folder(synthvqa_test_folder):
    return synthvqa_test_folder


def _kept(method, adapter, items):
    prompt = adapter.prepare([it.load_image() for it in items], [it.prompt for it in items],
                             keys=[it.qid for it in items])
    out = stepprune.PrunedVLM(adapter, method).generate(prompt, max_new_tokens=1)
    return out.kept_index


def test_keeps_the_evidence_then_the_same_fill_as_random(folder, tmp_path):
    adapter = stepprune.load_backbone(BACKBONE)
    items = synthvqa.load(folder)
    small = [it for it in items if 0 < len(set(it.meta["evidence"])) <= 16][:3]
    empty = [dataclasses.replace(items[-1], meta={**items[-1].meta, "evidence": []})]
    assert len(small) == 3
    # The same records, with the last question's evidence emptied (a few existence and counting questions have none).
    records = [json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines()]
    records = [{**r, "evidence": []} if r["qid"] == empty[0].qid else r for r in records]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in records))
    oracle = EvidenceOracle(EvidenceConfig(budget=16, questions=str(questions)))
    random = stepprune.build_method("random", budget=16)
    got, rand = _kept(oracle, adapter, small + empty), _kept(random, adapter, small + empty)
    for it, kept, r in zip(small + empty, got, rand):
        evidence = set(it.meta["evidence"])
        assert len(kept) == 16 and kept == sorted(set(kept)) and evidence <= set(kept)
        # The fill is random's draw for the same question, with the evidence taken out of it.
        seed = zlib_seed(it.qid)
        perm = torch.randperm(576, generator=torch.Generator().manual_seed(seed))
        fill = [p for p in perm.tolist() if p not in evidence][: 16 - len(evidence)]
        assert set(kept) == evidence | set(fill)
    assert got[-1] == rand[-1]  # no evidence: exactly random's selection


def zlib_seed(key):
    import zlib

    return (0 * 1_000_003 + zlib.crc32(key.encode())) % (2**63)


def test_more_evidence_than_budget_keeps_a_subset_of_it():
    gen = torch.Generator().manual_seed(0)
    got = evidence_first(range(10, 30), torch.randperm(50, generator=gen), 5, gen).tolist()
    assert len(got) == 5 and set(got) <= set(range(10, 30)) and got == sorted(got)


def test_a_question_without_a_record_or_a_bad_file_is_named(folder, tmp_path):
    oracle = EvidenceOracle(EvidenceConfig(budget=4, questions=str(folder / "questions.jsonl")))
    with pytest.raises(ValueError, match="no question with qid 'nope'"):
        oracle.evidence_of("nope")
    bad = tmp_path / "questions.jsonl"
    bad.write_text(json.dumps({"qid": "a", "evidence": [1, 2]}) + "\n" + json.dumps({"qid": "b", "evidence": "x"}))
    with pytest.raises(ValueError, match=r"questions.jsonl, row 2, field 'evidence'"):
        read_evidence(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="row 1: not JSON"):
        read_evidence(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_evidence(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="set questions"):
        EvidenceConfig(budget=4)


def test_image_scope_keeps_every_question_s_evidence_on_the_image(tmp_path):
    rows = [{"qid": "a1", "image_id": "a", "evidence": [3, 1]}, {"qid": "a2", "image_id": "a", "evidence": [1, 7]},
            {"qid": "b1", "image_id": "b", "evidence": [5]}, {"qid": "a3", "image_id": "a", "evidence": []}]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in rows))
    assert read_evidence(questions) == {"a1": [3, 1], "a2": [1, 7], "b1": [5], "a3": []}
    union = read_evidence(questions, "image")
    assert union == {"a1": [1, 3, 7], "a2": [1, 3, 7], "a3": [1, 3, 7], "b1": [5]}
    oracle = EvidenceOracle(EvidenceConfig(budget=4, questions=str(questions), scope="image"))
    assert oracle.evidence_of("a3") == [1, 3, 7]
    questions.write_text(json.dumps({"qid": "a1", "evidence": [3]}))
    with pytest.raises(ValueError, match=r"questions.jsonl, row 1, field 'image_id'"):
        read_evidence(questions, "image")
    with pytest.raises(ValueError, match="scope must be"):
        EvidenceConfig(budget=4, questions=str(questions), scope="scene")


def test_image_scope_on_synthvqa_is_the_union_of_the_image_s_questions(folder):
    items = synthvqa.load(folder)
    union = read_evidence(folder / "questions.jsonl", "image")
    image = items[0].meta["image_id"]
    same = [it for it in items if it.meta["image_id"] == image]
    assert len(same) > 1
    expected = sorted({int(e) for it in same for e in it.meta["evidence"]})
    assert all(union[it.qid] == expected for it in same)
    assert any(set(it.meta["evidence"]) < set(expected) for it in same)  # strictly more than some question's own


def _selection(config, key, n=36):
    """The oracle's kept indices for sample ``key`` on a 6 x 6 grid, without a backbone."""
    from types import SimpleNamespace

    ctx = SimpleNamespace(sample_key=lambda b: key)
    return EvidenceOracle(config).indices(ctx, 0, 6, 6, config.keep_count(n, 0)).tolist()


@pytest.fixture
def scene(tmp_path):
    """One image: the question 'q' is about patches 0-3, the other questions about 10-21 (twelve distractors)."""
    rows = [{"qid": "q", "image_id": "i", "evidence": [0, 1, 2, 3]},
            {"qid": "o1", "image_id": "i", "evidence": list(range(10, 16))},
            {"qid": "o2", "image_id": "i", "evidence": list(range(16, 22))}]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in rows))
    return str(questions)


def test_share_keeps_that_share_of_the_evidence_and_the_fill_avoids_the_rest(scene):
    for share, n_kept in ((0.0, 0), (0.5, 2), (0.75, 3), (1.0, 4)):
        kept = _selection(EvidenceConfig(budget=20, questions=scene, share=share), "q")
        assert len(kept) == 20 and kept == sorted(set(kept))
        assert len(set(kept) & {0, 1, 2, 3}) == n_kept  # 16 of the 32 other patches fill; none is evidence


def test_background_fill_avoids_other_questions_evidence_and_distractor_fill_takes_it_first(scene):
    background = _selection(EvidenceConfig(budget=16, questions=scene, fill="background"), "q")
    assert {0, 1, 2, 3} <= set(background) and not set(background) & set(range(10, 22))
    distractors = _selection(EvidenceConfig(budget=16, questions=scene, fill="distractors"), "q")
    assert set(distractors) == set(range(4)) | set(range(10, 22))
    # A budget beyond the background: K tokens still, the 2 kept evidence patches, then the 20 background ones, then
    # the 2 left-out evidence patches, and only then 6 distractors.
    full = _selection(EvidenceConfig(budget=30, questions=scene, fill="background", share=0.5), "q")
    assert len(full) == 30 and set(range(4)) <= set(full) and len(set(full) & set(range(10, 22))) == 6
    with pytest.raises(ValueError, match="share must be in"):
        EvidenceConfig(budget=4, questions=scene, share=1.5)
    with pytest.raises(ValueError, match="fill must be"):
        EvidenceConfig(budget=4, questions=scene, fill="objects")


def test_the_default_fill_is_random_s_draw_whatever_the_new_knobs(scene):
    base = _selection(EvidenceConfig(budget=12, questions=scene), "q")
    assert base == _selection(EvidenceConfig(budget=12, questions=scene, share=1.0, fill="random"), "q")
    gen = torch.Generator().manual_seed(zlib_seed("q"))
    perm = torch.randperm(36, generator=gen).tolist()
    assert set(base) == {0, 1, 2, 3} | set([p for p in perm if p > 3][:8])
