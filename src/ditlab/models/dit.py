"""The DiT backbone: patchify -> N conditioning blocks -> final layer -> unpatchify.

It reads top to bottom like the official ``models.py``; the block design comes from the
:data:`~ditlab.models.blocks.BLOCKS` registry, and the backbone knows nothing about the
diffusion objective beyond the number of output channels it must produce.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ditlab.errors import DitlabError
from ditlab.models.blocks import BLOCKS, Conditioning
from ditlab.models.layers import (
    Attention,
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    get_2d_sincos_pos_embed,
    modulate,
)
from ditlab.models.options import make_norm
from ditlab.models.rope import RoPE2D
from ditlab.registry import split_name

POSITIONS = ("sincos", "rope2d")
BLOCK_OPTION_DEFAULTS = {"norm": "layernorm", "mlp": "gelu", "qk_norm": False}  # DiTBlock's (the paper's)


class FinalLayer(nn.Module):
    """LayerNorm (adaLN-modulated by c, or a plain affine LN) then a linear map to p*p*C_out per token."""

    def __init__(
        self, hidden_size: int, patch_size: int, out_channels: int, modulated: bool = True, norm: str = "layernorm"
    ):
        super().__init__()
        self.norm_final = make_norm(norm, hidden_size, affine=not modulated)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.modulated = modulated
        if modulated:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.norm_final(x)
        if self.modulated:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = modulate(x, shift, scale)
        return self.linear(x)


class DiT(nn.Module):
    """Diffusion Transformer. ``forward(x, t, y)``: (N, C, H, W), (N,), (N,) -> (N, C_out, H, W)."""

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        out_channels: int | None = None,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        block: str = "adaln_zero",
        block_module: str | None = None,
        block_kwargs: dict | None = None,
        attn_backend: str = "sdpa",
        grad_checkpointing: bool = False,
        position: str = "sincos",
    ):
        super().__init__()
        _validate(input_size, patch_size, hidden_size, num_heads, depth, attn_backend, position)
        block_cls = BLOCKS.get(block, block_module)  # its class attributes; the blocks are built below
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else 2 * in_channels
        self.input_size = input_size
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.block_name = block
        self.hidden_size = hidden_size
        self.position = position
        self.grad_checkpointing = grad_checkpointing
        self.context_tokens = block_cls.context_tokens_in_sequence

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        if position == "sincos":
            # Fixed sin-cos table; a Parameter (not a buffer) so official state dicts load strictly.
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        else:  # rope2d: positions enter only as rotations of q and k in self-attention; no table
            self.pos_embed = None
        self.blocks = nn.ModuleList(
            [
                BLOCKS.build(
                    block,
                    hidden_size,
                    num_heads,
                    module=block_module,
                    mlp_ratio=mlp_ratio,
                    attn_backend=attn_backend,
                    **(block_kwargs or {}),
                )
                for _ in range(depth)
            ]
        )
        norm = (block_kwargs or {}).get("norm", "layernorm")
        self.final_layer = FinalLayer(
            hidden_size, patch_size, self.out_channels, block_cls.final_layer_modulation, norm
        )
        if position == "rope2d":
            # One shared module (non-persistent tables) set on every self-attention built from the shared
            # layers, whatever the block design, so user blocks get it too.
            self.rope = RoPE2D(self.x_embedder.grid_size, hidden_size // num_heads)
            for module in self.blocks.modules():
                if isinstance(module, Attention):
                    module.rope = self.rope
        self.initialize_weights()

    @property
    def num_tokens(self) -> int:
        return self.x_embedder.num_patches

    def initialize_weights(self) -> None:
        # 1. Every Linear: xavier-uniform weight, zero bias (transformer default).
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        # 2. Frozen 2-D sin-cos positional table.
        if self.pos_embed is not None:
            pos = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.x_embedder.grid_size)
            self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        # 3. Patch embedding like a Linear over the flattened (C, p, p) patch.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.zeros_(self.x_embedder.proj.bias)
        # 4-5. Label table and timestep MLP: N(0, 0.02).
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # 6. Design-specific zero-inits (adaLN-Zero: modulation = 0, so every block is the identity).
        for block in self.blocks:
            block.initialize()
        # 7. Zero final layer (and its modulation): the network outputs exactly 0 at init.
        if self.final_layer.modulated:
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) -> (N, C, H, W); inside a token the channel varies fastest, then column, then row."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.x_embedder(x)  # (N, T, D)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        num_image_tokens = x.shape[1]
        t_emb = self.t_embedder(t)  # (N, D)
        y_emb = self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        cond = Conditioning(c=t_emb + y_emb, tokens=torch.stack([t_emb, y_emb], dim=1))
        if self.context_tokens:  # in-context: append [t, y] as tokens
            x = torch.cat([x, cond.tokens[:, : self.context_tokens]], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, cond, use_reentrant=False)
            else:
                x = block(x, cond)
        x = x[:, :num_image_tokens]  # drop conditioning tokens, if any
        x = self.final_layer(x, cond.c)  # (N, T, p*p*C_out)
        return self.unpatchify(x)  # (N, C_out, H, W)


def _validate(
    input_size: int, patch_size: int, hidden_size: int, num_heads: int, depth: int, attn_backend: str, position: str
):
    if patch_size <= 0 or input_size % patch_size:
        raise DitlabError(
            f"patch size {patch_size} does not divide the model input size {input_size}; "
            f"set model.patch_size to a divisor of {input_size} (e.g. {_divisors(input_size)})"
        )
    if hidden_size % num_heads:
        raise DitlabError(
            f"model.hidden_size={hidden_size} is not divisible by model.num_heads={num_heads}; change one of them"
        )
    if hidden_size % 4:
        raise DitlabError(f"model.hidden_size={hidden_size} must be a multiple of 4 (2-D sin-cos positional table)")
    if depth <= 0:
        raise DitlabError(f"model.depth must be positive, got {depth}")
    if attn_backend not in ("sdpa", "math"):
        raise DitlabError(f"model.attn_backend must be 'sdpa' or 'math', got '{attn_backend}'")
    if position not in POSITIONS:
        raise DitlabError(f"unknown position '{position}'; set block.position to one of {', '.join(POSITIONS)}")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


# Keys of the model group that are not DiT constructor arguments.
MODEL_META_KEYS = ("name", "compile")


def model_kwargs(model_cfg: Any, block_cfg: Any) -> dict[str, Any]:
    """DiT constructor arguments from the ``model`` and ``block`` groups (shape-independent part)."""
    _, _, kw = split_name(model_cfg)
    for key in MODEL_META_KEYS:
        kw.pop(key, None)
    block_name, block_module, block_kw = split_name(block_cfg)
    # block.position is a backbone option (the sin-cos table, or RoPE in every self-attention); it lives in
    # the block group with the other recipe options, so `ditlab-flops block.position=rope2d` works too.
    position = block_kw.pop("position", "sincos")
    # Recipe options at their DiT defaults are not passed on, so a user block whose constructor does not
    # take them still builds from a YAML that lists them (or from a shipped block's YAML).
    for key, default in BLOCK_OPTION_DEFAULTS.items():
        if block_kw.get(key, default) == default:
            block_kw.pop(key, None)
    return {**kw, "block": block_name, "block_module": block_module, "block_kwargs": block_kw, "position": position}


def model_tag(size: str, patch_size: int) -> str:
    """Paper-style name, e.g. ``DiT-XL/2``."""
    return f"DiT-{size}/{patch_size}"
