"""The diagonal-masked denoiser, Eq. (14), implemented as the per-token map it reduces to.

Eq. (14) is one pre-norm ViT block whose attention mask is log I_N (0 on the diagonal, -inf elsewhere). Each
softmax row then puts all its weight on the token itself, so attention reduces *exactly* to the value path:

    r_i  = x~_i + W_O (W_V LN_1(x~_i) + b_V) + b_O
    x^_i = r_i + FFN(LN_2(r_i))

We implement this map directly: no Q/K projections (they would receive no gradient anyway) and no token mixing,
so a noised token cannot recover its content from its neighbours. W_O and the FFN output layer are zero-initialised,
so the block starts as the identity (limiting the train/inference gap while it learns). It is train-only by default.

The width is one pre-merger patch feature: d_v for LLaVA; for Qwen2.5-VL each of the 4 concatenated patch
features of a merged token (1280 wide) is denoised separately before the frozen merger, mirroring LLaVA.
"""

from __future__ import annotations

from torch import Tensor, nn


class DiagonalDenoiser(nn.Module):
    """Den_psi of Eq. (14).

    Args:
        width: feature width of one patch (d_tok / token_group).
        group: patch features concatenated per token row (1 for LLaVA, 4 for Qwen2.5-VL).
        mlp_ratio: FFN hidden width as a multiple of ``width``.
    """

    def __init__(self, width: int, group: int = 1, mlp_ratio: int = 4):
        super().__init__()
        self.width, self.group = width, group
        self.ln_1 = nn.LayerNorm(width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * width, width)
        self.zero_init_outputs()

    def zero_init_outputs(self) -> None:
        """Zeroes W_O and the FFN output layer, so the block is the identity (call again after any re-init)."""
        for layer in (self.out, self.fc2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, group * width) gated tokens -> (B, N, group * width) denoised tokens (per token, no mixing)."""
        shape = x.shape
        h = x.reshape(*shape[:-1], self.group, self.width)
        r = h + self.out(self.value(self.ln_1(h)))
        h = r + self.fc2(self.act(self.fc1(self.ln_2(r))))
        return h.reshape(shape)
