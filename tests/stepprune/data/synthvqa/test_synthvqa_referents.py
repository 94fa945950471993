"""The referent groups that jobs/bench_backbone_grounding.py splits the answer slot's attention by."""

from stepprune.data.synthvqa.native import read_questions, read_scenes
from stepprune.data.synthvqa.referents import GROUPS, attribute_match_groups, named_attributes
from stepprune.data.synthvqa.vocab import N_PATCHES


def test_named_attributes_reads_the_referring_phrase():
    assert named_attributes("large red star") == {"size": "large", "color": "red", "shape": "star"}
    assert named_attributes("small object") == {"size": "small"}
    assert named_attributes("object") == {}


def _obj(i, color, shape, size, patches):
    return {"id": i, "color": color, "shape": shape, "size": size, "patches": patches}


def test_groups_by_shared_named_attributes_on_a_hand_made_scene():
    scene = {"objects": [_obj(0, "red", "star", "large", [1, 2, 3]),
                         _obj(1, "red", "circle", "large", [3, 4]),     # shares colour: some (3 is evidence)
                         _obj(2, "blue", "star", "small", [5, 6]),      # shares shape: some
                         _obj(3, "blue", "circle", "small", [6, 7])]}   # shares none; 6 goes to the closer match
    question = {"referents": [0], "evidence": [1, 2, 3],
                "extra": {"program": [{"operation": "select", "argument": "red star"},
                                      {"operation": "query size", "argument": "size"}]}}
    groups = attribute_match_groups(scene, question)
    assert groups["evidence"] == [1, 2, 3] and groups["all"] == []
    assert groups["some"] == [4, 5, 6] and groups["none"] == [7]
    assert sorted(p for g in GROUPS for p in groups[g]) == list(range(N_PATCHES))  # disjoint, complete
    two = dict(question, referents=[0, 1])
    assert attribute_match_groups(scene, two) is None


def test_every_generated_attribute_question_has_groups(generated):
    out, _ = generated
    split = out / "native" / "val"
    scenes = read_scenes(split)
    seen = 0
    for q in read_questions(split):
        groups = attribute_match_groups(scenes[q["image_id"]], q)
        if q["family"] != "attribute":
            continue
        seen += 1
        assert groups is not None and groups["evidence"] == sorted(set(q["evidence"]))
        assert groups["all"] == []  # the phrase is unique among the scene's shapes
        assert sum(len(groups[g]) for g in GROUPS) == N_PATCHES
    assert seen > 0
