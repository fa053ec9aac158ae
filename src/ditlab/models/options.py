"""Block options beyond the paper (the "modern DiT recipe"), shared by every conditioning design.

``block.norm``    ``layernorm`` (DiT) | ``rmsnorm``: RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467)
                  with a learnable scale, as LightningDiT uses it (Yao et al. 2025, arXiv 2501.01423,
                  github.com/hustvl/LightningDiT ``models/rmsnorm.py``); adaLN modulation still applies on top.
``block.mlp``     ``gelu`` (DiT) | ``swiglu``: SiLU-gated linear unit (Shazeer 2020, arXiv 2002.05202).
``block.qk_norm`` normalise queries and keys per head before the dot product (Dehghani et al. 2023,
                  arXiv 2302.05442; LightningDiT ``use_qknorm``).

The defaults build exactly the official DiT modules (same classes, same state-dict keys).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.models.layers import Mlp, make_qk_norm  # noqa: F401  (make_qk_norm: one home for the recipe's norms)

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


def check_options(norm: str, mlp: str) -> None:
    if norm not in NORMS:
        raise DitlabError(f"unknown norm '{norm}'; set block.norm to one of {', '.join(NORMS)}")
    if mlp not in MLPS:
        raise DitlabError(f"unknown mlp '{mlp}'; set block.mlp to one of {', '.join(MLPS)}")


def make_norm(kind: str, dim: int, affine: bool) -> nn.Module:
    """Token norm of a block or the final layer (eps 1e-6 as DiT).

    ``affine`` is the LayerNorm's elementwise affine (off where adaLN modulates the norm). RMSNorm always
    has its learnable scale (init 1), as in LightningDiT, where it is redundant with adaLN's (1 + scale)
    but trained all the same.
    """
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
    return nn.RMSNorm(dim, eps=1e-6)


def swiglu_hidden_size(gelu_hidden: int) -> int:
    """LightningDiT's rule (``SwiGLUFFN``): H = int(2/3 · int(D · mlp_ratio)), i.e. ⌊2·gelu_hidden/3⌋.

    Three matrices of D·H replace two of D·(4D), so the weights (and MACs) are equal when 3 divides
    4D, i.e. when 3 | D (DiT-S/B/XL), and within 2·D of equal otherwise; the biases differ by 2H − 4D.
    """
    return 2 * gelu_hidden // 3


class SwiGLU(nn.Module):
    """x -> w3(SiLU(a) ⊙ b), [a | b] = w12(x): one fused D -> 2H projection (first half gated), then H -> D."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=True)
        self.w3 = nn.Linear(hidden_dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(nn.functional.silu(a) * b)

    def macs(self, seq_len: int) -> int:
        """Multiply-adds for one sequence: w12 (D -> 2H) + w3 (H -> D) = 3·D·H per token."""
        return 3 * seq_len * self.w3.in_features * self.w3.out_features


def make_mlp(kind: str, dim: int, gelu_hidden: int) -> nn.Module:
    if kind == "gelu":
        return Mlp(dim, gelu_hidden)
    return SwiGLU(dim, swiglu_hidden_size(gelu_hidden))
