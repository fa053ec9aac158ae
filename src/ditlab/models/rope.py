"""2-D rotary position embedding in self-attention (``position=rope2d``).

RoPE (Su et al. 2021, arXiv 2104.09864) rotates each query/key pair of channels by an angle
proportional to the token's position, so the dot product q_m·k_n depends only on m − n. The 2-D
form follows LightningDiT (github.com/hustvl/LightningDiT ``models/pos_embed.py``,
``VisionRotaryEmbeddingFast`` from EVA-02): the first half of each head's channels is rotated by the
token's row, the second half by its column; frequencies θ^(−2j/(head_dim/2)) with θ = 10000;
channel pairs are adjacent (2j, 2j+1); the same rotation for every head, on q and k only.

Tokens are row-major (n = row·G + col, as :class:`~ditlab.models.layers.PatchEmbed` makes them).
Tokens after the G² image tokens (in-context's [t, y]) have no position and are not rotated.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ditlab.errors import DitlabError


def rope_2d_angles(grid_size: int, head_dim: int, theta: float = 10000.0, offset: tuple[float, float] = (0, 0)):
    """(G², head_dim) rotation angles for the row-major G×G grid shifted by ``offset`` = (rows, cols)."""
    if head_dim % 4:
        raise DitlabError(
            f"2-D RoPE needs a head size divisible by 4, got {head_dim}; change model.hidden_size or "
            "model.num_heads, or use block.position=sincos"
        )
    half = head_dim // 2  # channels per axis
    omega = theta ** (-torch.arange(0, half, 2, dtype=torch.float64) / half)  # (half/2,)
    idx = torch.arange(grid_size, dtype=torch.float64)
    rows = idx.repeat_interleave(grid_size) + offset[0]
    cols = idx.repeat(grid_size) + offset[1]
    angles = torch.cat([rows[:, None] * omega, cols[:, None] * omega], dim=1)  # (G², half)
    return angles.repeat_interleave(2, dim=1)  # each frequency fills an adjacent pair


class RoPE2D(nn.Module):
    """Rotates (N, H, S, head_dim) queries or keys; the tables are non-persistent buffers (not in checkpoints)."""

    def __init__(self, grid_size: int, head_dim: int, theta: float = 10000.0, offset: tuple[float, float] = (0, 0)):
        super().__init__()
        angles = rope_2d_angles(grid_size, head_dim, theta, offset)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.cos.shape[0]
        if x.shape[-2] > T:  # conditioning tokens appended after the image tokens keep their values
            return torch.cat([self(x[..., :T, :]), x[..., T:, :]], dim=-2)
        pairs = x.unflatten(-1, (-1, 2))  # (..., head_dim/2, 2): (x_2j, x_2j+1)
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (-x_2j+1, x_2j)
        return x * self.cos.to(x.dtype) + rotated * self.sin.to(x.dtype)
