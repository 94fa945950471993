"""The vision-side signals on synthetic queries/keys: CLS row, attention received (with padding), token keys."""

import torch

from stepprune.backbones.types import VisionFeatures
from stepprune.methods.vision_signals import cls_attention, received_attention, token_keys


def _features(q, k, valid, n):
    """VisionFeatures around fixed (B, H, T, d) queries/keys; only the fields the signals read are real."""
    B = q.shape[0]
    return VisionFeatures(tokens=torch.zeros(B, max(n), 1), num_tokens=torch.tensor(n), grid=torch.zeros(B, 2),
                          cls=None, qk=lambda layer: (q, k, valid), attn_scale=q.shape[-1] ** -0.5)


def test_received_attention_pools_sub_patches_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 16, 4, generator=g), torch.randn(2, 3, 16, 4, generator=g)
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[1, 8:] = False  # sample 1 has 2 merged tokens (8 patches), padded to 4
    both = received_attention(_features(q, k, valid, [4, 2]), -1)
    alone = received_attention(_features(q[1:, :, :8], k[1:, :, :8], valid[1:, :8], [2]), -1)
    torch.testing.assert_close(both[1, :2], alone[0])
    assert both[1, 2:].abs().max() == 0
    # By hand for sample 0: softmax per head, mean over heads and over the 16 queries, mean over groups of 4 keys.
    a = ((q[0] @ k[0].transpose(-1, -2)) * 0.5).softmax(-1).mean(0).mean(0).view(4, 4).mean(-1)
    torch.testing.assert_close(both[0], a)
    summed = received_attention(_features(q, k, valid, [4, 2]), -1, "sum")
    torch.testing.assert_close(summed[0], a * 16)
    torch.testing.assert_close(summed[0].sum(), torch.tensor(4.0))  # 16 rows of 1 spread over 4 groups of 4


def test_cls_attention_and_token_keys_by_family():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 2, 5, 3, generator=g), torch.randn(1, 2, 5, 3, generator=g)
    vis = _features(q, k, torch.ones(1, 5, dtype=torch.bool), [4])
    cls = cls_attention(vis, -1)
    assert cls.shape == (1, 2, 4)
    torch.testing.assert_close(cls[0, 1], ((q[0, 1, 0] @ k[0, 1].T) * 3 ** -0.5).softmax(-1)[1:])
    full = token_keys(vis, -1, "concat", "llava")
    torch.testing.assert_close(full[0, 0], torch.cat([k[0, 0, 1], k[0, 1, 1]]))  # heads side by side, no CLS
    torch.testing.assert_close(token_keys(vis, -1, "mean", "llava")[0], k[0, :, 1:].mean(0))
    q8, k8 = torch.randn(1, 2, 8, 3, generator=g), torch.randn(1, 2, 8, 3, generator=g)
    pooled = token_keys(_features(q8, k8, torch.ones(1, 8, dtype=torch.bool), [2]), -1, "mean", "qwen2_5_vl")
    torch.testing.assert_close(pooled[0, 1], k8[0, :, 4:8].mean(dim=(0, 1)))
