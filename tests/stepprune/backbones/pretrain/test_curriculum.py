"""The scene curriculum: phases by step, fresh deterministic images, separate index blocks."""

import pytest

from stepprune.backbones.pretrain.batches import make_batch
from stepprune.backbones.pretrain.curriculum import Curriculum, Phase
from stepprune.backbones.pretrain.packing import QAPacker
from stepprune.backbones.pretrain.spec import build_backbone
from stepprune.data.synthvqa.config import DEFAULT_FAMILY_WEIGHTS
from stepprune.data.synthvqa.sample import make_sample

from .conftest import TINY


def test_phase_boundaries_and_object_ranges():
    cur = Curriculum([Phase(3, 1, 4), Phase(0, 1, 8), Phase(2, 1, 20)], stage=2, seed=7, questions_per_image=5)
    assert cur.total_steps == 5
    assert [cur.phase_at(s) for s in range(5)] == [0, 0, 0, 2, 2]  # the empty phase is skipped
    cfg, _ = cur.images(0, 4)[0]
    assert (cfg.min_objects, cfg.max_objects, cfg.seed, cfg.questions_per_image) == (1, 4, 7, 5)
    assert cur.images(4, 4)[0][0].max_objects == 20
    with pytest.raises(IndexError):
        cur.phase_at(5)


def test_images_are_fresh_deterministic_and_disjoint_across_stages():
    a = Curriculum([Phase(4, 1, 5), Phase(4)], stage=1)
    b = Curriculum([Phase(4, 1, 5), Phase(4)], stage=2)
    seen = [i for s in range(8) for _, i in a.images(s, 3)]
    assert len(set(seen)) == len(seen)
    assert [i for _, i in a.images(5, 3)] == [i for _, i in Curriculum([Phase(4, 1, 5), Phase(4)], 1).images(5, 3)]
    assert not set(seen) & {i for s in range(8) for _, i in b.images(s, 3)}


def test_bad_phases_are_rejected():
    with pytest.raises(ValueError):
        Phase(3, 5, 2)
    with pytest.raises(ValueError):
        Phase(-1)
    with pytest.raises(ValueError):
        Curriculum([], stage=1)


def test_phase_families_select_the_questions_of_a_phase():
    cur = Curriculum([Phase(2, 1, 5), Phase(3, 1, 1, families=["existence", "mme"])], stage=2)
    assert cur.families_at(1) is None
    assert cur.families_at(2) == frozenset({"existence", "mme"}) == cur.families_at(4)
    with pytest.raises(ValueError, match="unknown question families \\['exists'\\]"):
        Phase(3, families=["exists", "mme"])


def test_phase_family_weights_ask_only_those_families():
    cur = Curriculum([Phase(1, 1, 5), Phase(2, 1, 1, family_weights={"mc_mmbench": 1.0, "mc_science": 1.0})],
                     stage=2, questions_per_image=8)
    assert cur.images(0, 1)[0][0].family_weights == DEFAULT_FAMILY_WEIGHTS  # a phase without them: the defaults
    samples = [make_sample(cfg, "train", i) for cfg, i in cur.images(1, 4)]
    fams = [q.family for s in samples for q in s.questions]
    assert set(fams) == {"mc_mmbench", "mc_science"} and len(fams) >= 4 * 6  # (nearly) every slot asks them
    with pytest.raises(ValueError, match="family_weights: unknown question families \\['mcq'\\]"):
        Phase(3, family_weights={"mcq": 1.0})
    with pytest.raises(ValueError, match="at least one > 0"):
        Phase(3, family_weights={"relation": 0.0})


def test_a_phase_whose_scenes_cannot_answer_its_families_fails_clearly():
    _, processor = build_backbone(TINY, seed=1)
    packer = QAPacker(processor, TINY.num_patches)
    cur = Curriculum([Phase(1, 1, 1, family_weights={"relation": 1.0})], stage=2)  # relation needs 2 shapes
    with pytest.raises(ValueError, match=r"1-1 shapes\) is of the asked families \['relation'\]"):
        make_batch(cur.images(0, 2), processor, packer)
    with pytest.raises(ValueError, match="relation needs 2 shapes"):
        make_batch(Curriculum([Phase(1, 1, 1)], stage=2).images(0, 2), processor, packer, families={"relation"})
