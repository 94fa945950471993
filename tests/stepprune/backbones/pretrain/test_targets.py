"""Per-patch and image-level targets read off the generator's owner map."""

import numpy as np

from stepprune.backbones.pretrain.targets import IGNORE, KINDS, image_targets, patch_owners, patch_targets
from stepprune.data.synthvqa import SynthVQAConfig, make_sample
from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPES, WORDS


def test_owner_needs_the_evidence_threshold_not_a_plain_majority():
    owner = np.full((192, 192), -1, dtype=np.int16)
    owner[0:2, 0:7] = 0  # 14 px of element 0 in patch 0: >= 13 px (20 %) although background dominates
    owner[0:2, 8:14] = 1  # 12 px of element 1 in patch 1: below the threshold
    owner[8:16, 8:16] = 0  # all of patch 25 (row 1, col 1) is element 0
    owner[8:16, 8:10] = 1  # ... except 16 px of element 1: the larger owner wins
    got = patch_owners(owner, 2)
    assert got[0] == 0 and got[1] == -1 and got[25] == 0
    assert (np.delete(got, [0, 25]) == -1).all()


def test_patch_targets_follow_the_scene():
    cfg = SynthVQAConfig(seed=0)
    for index in range(6):
        s = make_sample(cfg, "train", index)
        t = patch_targets(s)
        scene = s.scene
        owners = patch_owners(s.rendered.owner, len(scene.objects) + len(scene.texts))
        for o in scene.objects:
            mine = np.flatnonzero(owners == o.id)
            # a shape owns only its evidence patches, and they carry its attributes
            assert set(mine) <= set(s.geometry[o.id].patches)
            assert (t["kind"][mine] == 1).all() and (t["color"][mine] == COLOR_NAMES.index(o.color)).all()
            assert (t["shape"][mine] == SHAPES.index(o.shape)).all()
        for w in scene.texts:
            mine = np.flatnonzero(owners == w.id)
            assert len(mine) >= 1 and (t["word"][mine] == WORDS.index(w.word)).all()
        # background has no attribute targets; shapes have no word; words have no shape
        bg, shape, word = (t["kind"] == k for k in range(len(KINDS)))
        assert (t["color"][bg] == IGNORE).all() and (t["shape"][bg] == IGNORE).all()
        assert (t["word"][shape] == IGNORE).all() and (t["shape"][word] == IGNORE).all()
        assert (t["color"][~bg] != IGNORE).all() and (t["size"][shape] != IGNORE).all()
        # one anchor per shape that owns a patch, only on shape patches
        owning = {int(i) for i in owners if 0 <= i < len(scene.objects)}
        assert t["anchor"].sum() == len(owning) and (t["anchor"][~shape] == 0).all()
        # the owner's box contains the patch (up to the patch size: it covers >= 13 of its 64 pixels)
        rows, cols = np.divmod(np.arange(576), 24)
        box = t["box"] * 191
        fg = t["box_valid"]
        assert (box[fg, 0] <= cols[fg] * 8 + 7).all() and (box[fg, 2] >= cols[fg] * 8).all()
        assert (box[fg, 1] <= rows[fg] * 8 + 7).all() and (box[fg, 3] >= rows[fg] * 8).all()
        assert (t["box"][~fg] == 0).all()


def test_image_targets_count_shapes_and_pairs():
    s = make_sample(SynthVQAConfig(seed=0), "val", 3)
    t = image_targets(s)
    pairs = {(o.color, o.shape) for o in s.scene.objects}
    assert t["combos"].sum() == len(pairs)
    for c, sh in pairs:
        assert t["combos"][COLOR_NAMES.index(c) * len(SHAPES) + SHAPES.index(sh)] == 1
    assert int(t["n_objects"]) == len(s.scene.objects)


def test_context_window_is_the_owner_silhouette_around_the_patch():
    from stepprune.backbones.pretrain.targets import CONTEXT_DIM

    s = make_sample(SynthVQAConfig(seed=0), "train", 2)
    t = patch_targets(s)
    owners = patch_owners(s.rendered.owner, len(s.scene.objects) + len(s.scene.texts))
    assert t["context"].shape == (576, CONTEXT_DIM) and not t["context"][owners < 0].any()
    for p in np.flatnonzero(owners >= 0)[:40]:
        r, c = divmod(int(p), 24)
        own = s.rendered.owner[r * 8: r * 8 + 8, c * 8: c * 8 + 8] == owners[p]
        window = t["context"][p].reshape(10, 10)
        # the patch itself is the central 2 x 2 cells of 4 x 4 pixels
        assert np.isclose(window[4:6, 4:6].mean(), own.mean())
        # the window's owner pixels never exceed the owner's visible pixels
        assert window.sum() * 16 <= s.geometry[int(owners[p])].pixels + 1e-6
