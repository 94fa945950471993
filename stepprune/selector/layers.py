"""Small building blocks shared by the selector's encoder and decoder: the FFN, head split/merge and weight init.

Shapes: B batch, L sequence, d width, H heads, d_h = d / H.
"""

from __future__ import annotations

from torch import Tensor, nn


class FeedForward(nn.Module):
    """d -> ratio * d -> d with GELU (the ViT MLP)."""

    def __init__(self, d: int, ratio: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(d, ratio * d)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ratio * d, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, H * d_h) -> (B, H, L, d_h)."""
    B, L, D = x.shape
    return x.view(B, L, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, d_h) -> (B, L, H * d_h)."""
    B, H, L, dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * dh)


def init_weights(module: nn.Module, std: float) -> None:
    """Trunc-normal(std) linear weights with zero biases; LayerNorms at (1, 0). Applied recursively."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
