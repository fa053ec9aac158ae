"""The four conditioning designs of DiT (paper §3.2, Fig. 5) behind one interface.

Every block is ``Block(hidden_size, num_heads, mlp_ratio, attn_backend, **block_kwargs)`` with
``forward(x, cond) -> x`` where ``x`` is (N, T, D) and ``cond`` carries

* ``cond.c``      (N, D): t_emb + y_emb, used by the adaLN designs,
* ``cond.tokens`` (N, 2, D): [t_emb, y_emb] as a sequence, used by cross-attention.

Two class attributes tell the backbone how to wire a design:

* ``context_tokens_in_sequence``: how many conditioning tokens the backbone appends to the image
  tokens before the first block and drops before the final layer (in-context: 2).
* ``final_layer_modulation``: whether the final layer is adaLN-modulated by ``c``.

``initialize()`` applies the design's zero-inits after the backbone's generic init.
``macs(seq_len)`` is the design's closed-form multiply-add count for one image (paper convention,
:mod:`ditlab.models.accounting`); a design that does not define it is counted by measurement only.
Add a design with ``@BLOCKS.register("name")`` on a subclass of :class:`DiTBlock`.

The modern-recipe options ``norm``, ``mlp`` and ``qk_norm`` (``block.*`` keys, see
:mod:`ditlab.models.options`) are handled once, in :class:`DiTBlock`: a design builds its norms with
``self.make_norm(dim, affine)`` and uses ``self.attn``/``self.mlp``, and every option composes with it.
A user block gets them by accepting ``**options`` and passing them to ``super().__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ditlab.models.layers import Attention, CrossAttention, modulate
from ditlab.models.options import check_options, make_mlp, make_norm
from ditlab.registry import Registry

BLOCKS: Registry[type[DiTBlock]] = Registry("block", "block")
CONDITIONING_TOKENS = 2  # cond.tokens = [t_emb, y_emb]


@dataclass
class Conditioning:
    c: torch.Tensor  # (N, D) = t_emb + y_emb
    tokens: torch.Tensor  # (N, CONDITIONING_TOKENS, D) = [t_emb, y_emb]


class DiTBlock(nn.Module):
    context_tokens_in_sequence: int = 0
    final_layer_modulation: bool = True

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_backend: str = "sdpa",
        norm: str = "layernorm",
        mlp: str = "gelu",
        qk_norm: bool = False,
    ):
        super().__init__()
        check_options(norm, mlp)
        self.norm_kind = norm
        self.attn = Attention(hidden_size, num_heads, backend=attn_backend, qk_norm=norm if qk_norm else None)
        self.mlp = make_mlp(mlp, hidden_size, int(hidden_size * mlp_ratio))

    def make_norm(self, dim: int, affine: bool) -> nn.Module:
        """A token norm of the kind ``block.norm`` chose (``affine``: LayerNorm's elementwise affine)."""
        return make_norm(self.norm_kind, dim, affine)

    def initialize(self) -> None:
        """Design-specific init, run after xavier init of every Linear."""

    def macs(self, seq_len: int) -> int | None:
        """Multiply-adds of one forward pass on one image's ``seq_len`` tokens (norms, activations and
        elementwise ops free). ``None``: not declared, so only the measured Gflops apply. A design that
        overrides ``forward`` must override this too, or its inherited count is not used."""
        return None

    def attn_mlp_macs(self, seq_len: int) -> int:
        """The self-attention + MLP part every design shares."""
        return self.attn.macs(seq_len) + self.mlp.macs(seq_len)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@BLOCKS.register("adaln_zero")
class AdaLNZeroBlock(DiTBlock):
    """adaLN-Zero (official DiT): shift/scale/gate for attention and MLP regressed from c.

    The modulation Linear is zero-initialised, so every gate is 0 and the block is the identity.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, attn_backend: str = "sdpa", **options):
        super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend, **options)
        self.norm1 = self.make_norm(hidden_size, affine=False)
        self.norm2 = self.make_norm(hidden_size, affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def initialize(self) -> None:
        nn.init.zeros_(self.adaLN_modulation[-1].weight)  # zero: shift = scale = gate = 0 -> identity block
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(cond.c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x

    def macs(self, seq_len: int) -> int:
        return self.attn_mlp_macs(seq_len) + _linear_macs(self.adaLN_modulation[-1])  # modulation: once per image


@BLOCKS.register("adaln")
class AdaLNBlock(DiTBlock):
    """adaLN: the LayerNorms' scale/shift regressed from c; no residual gates.

    The modulation Linear is zero-initialised, so each norm starts as a plain LayerNorm
    (scale 1, shift 0); the block itself is not the identity at init.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, attn_backend: str = "sdpa", **options):
        super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend, **options)
        self.norm1 = self.make_norm(hidden_size, affine=False)
        self.norm2 = self.make_norm(hidden_size, affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 4 * hidden_size, bias=True))

    def initialize(self) -> None:
        nn.init.zeros_(self.adaLN_modulation[-1].weight)  # zero: norms start as plain LayerNorm
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(cond.c).chunk(4, dim=1)
        x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x

    def macs(self, seq_len: int) -> int:
        return self.attn_mlp_macs(seq_len) + _linear_macs(self.adaLN_modulation[-1])  # modulation: once per image


@BLOCKS.register("cross_attn")
class CrossAttentionBlock(DiTBlock):
    """Standard ViT block plus multi-head cross-attention to [t_emb, y_emb] after self-attention."""

    final_layer_modulation = False

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, attn_backend: str = "sdpa", **options):
        super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend, **options)
        self.norm1 = self.make_norm(hidden_size, affine=True)
        self.norm_cross = self.make_norm(hidden_size, affine=True)
        self.norm2 = self.make_norm(hidden_size, affine=True)
        qk_norm = options.get("norm", "layernorm") if options.get("qk_norm") else None
        self.cross_attn = CrossAttention(hidden_size, num_heads, backend=attn_backend, qk_norm=qk_norm)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.cross_attn(self.norm_cross(x), cond.tokens)
        x = x + self.mlp(self.norm2(x))
        return x

    def macs(self, seq_len: int) -> int:
        return self.attn_mlp_macs(seq_len) + self.cross_attn.macs(seq_len, CONDITIONING_TOKENS)


@BLOCKS.register("in_context")
class InContextBlock(DiTBlock):
    """Standard ViT block; t and y arrive as two extra tokens in the sequence (no modulation)."""

    context_tokens_in_sequence = 2
    final_layer_modulation = False

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, attn_backend: str = "sdpa", **options):
        super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend, **options)
        self.norm1 = self.make_norm(hidden_size, affine=True)
        self.norm2 = self.make_norm(hidden_size, affine=True)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x

    def macs(self, seq_len: int) -> int:
        return self.attn_mlp_macs(seq_len)  # seq_len already counts the two context tokens


def _linear_macs(linear: nn.Linear) -> int:
    return linear.in_features * linear.out_features
