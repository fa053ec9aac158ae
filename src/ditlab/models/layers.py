"""Building blocks shared by every DiT variant: embedders, attention, MLP, positional table.

Parameter names follow the official DiT ``models.py`` (``x_embedder.proj``, ``t_embedder.mlp``,
``y_embedder.embedding_table``, ``attn.qkv``, ``attn.proj``, ``mlp.fc1``/``fc2``) so official
checkpoints load with a plain ``load_state_dict``.
References: DiT (github.com/facebookresearch/DiT), GLIDE (timestep embedding), MAE (sin-cos table).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # x: (N, T, D); shift/scale: (N, D), broadcast over tokens.
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#                          Timestep and label embedders                         #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> (N, D): [cos | sin] frequency features, then a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        # Frequencies exp(-ln(max_period) * k / half) for k < half, in float32 (GLIDE / official DiT;
        # diffusers' DiTTransformer2DModel divides by half - 1 instead: downscale_freq_shift=1).
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> (N, D). Label id ``num_classes`` is the null class used for CFG.

    During training each label is replaced by the null id with probability ``dropout_prob``.
    ``num_classes == 0`` means unconditional: every sample uses the single null row.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        use_cfg_embedding = int(dropout_prob > 0 or num_classes == 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes == 0:
            labels = torch.zeros_like(labels)
        elif (train and self.dropout_prob > 0) or (force_drop_ids is not None):
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


#################################################################################
#                         Patches and positional table                          #
#################################################################################


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, T, D) with a stride-p conv; token n = row * (W/p) + col."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def get_1d_sincos_pos_embed(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, embed_dim) as [sin | cos], float64 (MAE)."""
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """(G*G, D) table; the first D/2 dims encode the column, the last D/2 the row (MAE layout)."""
    assert embed_dim % 2 == 0
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    emb_col = get_1d_sincos_pos_embed(embed_dim // 2, cols)
    emb_row = get_1d_sincos_pos_embed(embed_dim // 2, rows)
    return np.concatenate([emb_col, emb_row], axis=1)


#################################################################################
#                               Attention and MLP                               #
#################################################################################


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    # q: (N, H, Tq, d), k/v: (N, H, Tk, d) -> (N, H, Tq, d)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    # "math": explicit matmuls (reference path; counted by any flop counter).
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm layout).

    Options (:mod:`ditlab.models.options`): ``qk_norm`` ("layernorm"/"rmsnorm"/None) normalises q and k
    per head; ``rope`` is a shared :class:`~ditlab.models.rope.RoPE2D` the backbone sets when
    ``block.position=rope2d`` (norm first, then rotation, as LightningDiT).
    """

    def __init__(self, dim: int, num_heads: int, backend: str = "sdpa", qk_norm: str | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        _add_qk_norm(self, qk_norm, dim // num_heads)
        self.rope: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, T, D = x.shape
        q, k, v = self.qkv(x).reshape(N, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        out = attention(q, k, v, self.backend)  # (N, H, T, d)
        return self.proj(out.transpose(1, 2).reshape(N, T, D))

    def macs(self, seq_len: int) -> int:
        """Multiply-adds for one sequence: qkv + output projections, then QKᵀ and AV. QK-norm and the
        RoPE rotation are elementwise (about 4 multiplies per q/k element), free by the convention."""
        D = self.proj.in_features
        return 4 * seq_len * D * D + 2 * seq_len * seq_len * D


class CrossAttention(nn.Module):
    """Image tokens (queries) attend to a short conditioning sequence (keys/values); no positions."""

    def __init__(self, dim: int, num_heads: int, backend: str = "sdpa", qk_norm: str | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        _add_qk_norm(self, qk_norm, dim // num_heads)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        N, T, D = x.shape
        H, d = self.num_heads, D // self.num_heads
        q = self.q_norm(self.q(x).reshape(N, T, H, d).transpose(1, 2))
        kv = self.kv(context).reshape(N, context.shape[1], 2, H, d).permute(2, 0, 3, 1, 4)
        out = attention(q, self.k_norm(kv[0]), kv[1], self.backend)
        return self.proj(out.transpose(1, 2).reshape(N, T, D))

    def macs(self, seq_len: int, context_len: int) -> int:
        """Multiply-adds for one sequence: q + output projections, k/v projections, QKᵀ and AV."""
        D = self.proj.in_features
        return 2 * seq_len * D * D + 2 * context_len * D * D + 2 * seq_len * context_len * D


def make_qk_norm(kind: str, head_dim: int) -> nn.Module:
    """One norm over head_dim whose scale is shared by all heads (LightningDiT ``q_norm``/``k_norm``):
    RMSNorm (eps 1e-6) with ``block.norm=rmsnorm``, else a PyTorch-default LayerNorm (eps 1e-5, affine)."""
    if kind == "rmsnorm":
        return nn.RMSNorm(head_dim, eps=1e-6)
    return nn.LayerNorm(head_dim)


def _add_qk_norm(attn: nn.Module, kind: str | None, head_dim: int) -> None:
    """``q_norm``/``k_norm`` over head_dim (Identity when off, so the default adds no keys)."""
    attn.q_norm = make_qk_norm(kind, head_dim) if kind else nn.Identity()
    attn.k_norm = make_qk_norm(kind, head_dim) if kind else nn.Identity()


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2, as in the official DiT blocks."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=True)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def macs(self, seq_len: int) -> int:
        """Multiply-adds for one sequence: fc1 + fc2."""
        return 2 * seq_len * self.fc1.in_features * self.fc1.out_features
