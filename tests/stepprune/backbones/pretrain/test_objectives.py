"""The vision objectives: which patches each term sees, and that the heads can fit their targets."""

import torch

from stepprune.backbones.pretrain.objectives import ClsHeads, PatchHeads
from stepprune.backbones.pretrain.targets import IGNORE, MAX_COUNT, N_COMBOS, image_targets, patch_targets
from stepprune.data.synthvqa import SynthVQAConfig, make_sample


def _targets(n=2):
    samples = [make_sample(SynthVQAConfig(seed=0), "train", i) for i in range(n)]
    pt = [patch_targets(s) for s in samples]
    it = [image_targets(s) for s in samples]
    stack = lambda ts: {k: torch.from_numpy(__import__("numpy").stack([t[k] for t in ts])) for k in ts[0]}  # noqa: E731
    return stack(pt), stack(it)


def test_ignored_patches_do_not_move_the_loss():
    torch.manual_seed(0)
    heads = PatchHeads(16)
    targets, _ = _targets()
    tokens = torch.randn(2, 576, 16)
    base, _ = heads.loss(tokens, targets)
    # Perturb only background patches: their color/shape/size/word/box terms are ignored, but kind and anchor
    # see every patch, so the loss changes only through those two terms.
    bg = targets["kind"] == 0
    moved = tokens.clone()
    moved[bg] += torch.randn_like(moved[bg])
    _, m2 = heads.loss(moved, targets)
    _, m1 = heads.loss(tokens, targets)
    for k in ("loss_color", "loss_shape", "loss_size", "loss_word", "loss_box"):
        assert abs(m1[k] - m2[k]) < 1e-5, k
    assert abs(m1["loss_kind"] - m2["loss_kind"]) > 1e-4
    assert torch.isfinite(base)


def test_heads_fit_a_fixed_batch():
    torch.manual_seed(0)
    targets, image = _targets()
    # Tokens that hold the answers (one-hot class ids + box), as a trained tower would provide them.
    feats = [torch.nn.functional.one_hot(targets[k].clamp(min=0), c).float() * (targets[k] != IGNORE)[..., None]
             for k, c in (("kind", 3), ("color", 8), ("shape", 6), ("size", 3), ("word", 40))]
    tokens = torch.cat([*feats, targets["anchor"][..., None], targets["box"]], dim=-1)
    heads = PatchHeads(tokens.shape[-1])
    opt = torch.optim.Adam(heads.parameters(), lr=3e-2)
    first = None
    for _ in range(150):
        loss, metrics = heads.loss(tokens, targets)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first
    assert metrics["acc_color"] == 1.0 and metrics["acc_shape"] == 1.0 and metrics["acc_word"] == 1.0
    assert metrics["box_l1_px"] < 8


def test_cls_heads_shapes_and_count_target():
    _, image = _targets(3)
    heads = ClsHeads(8)
    combos, count = heads(torch.randn(3, 8))
    assert combos.shape == (3, N_COMBOS) and count.shape == (3, MAX_COUNT + 1)
    loss, metrics = heads.loss(torch.randn(3, 8), image)
    assert torch.isfinite(loss) and 0 <= metrics["acc_cls_count"] <= 1
