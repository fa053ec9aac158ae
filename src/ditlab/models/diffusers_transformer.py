"""``DiTTransformer2DModel`` whose config stores DiT's timestep frequencies and fused q/k/v projection.

diffusers' ``DiTTransformer2DModel`` embeds timesteps with ``downscale_freq_shift=1`` (frequencies
exp(-ln 1e4 * k / 127)); the official DiT uses 0 (k / 128), and with DiT weights the two give
different outputs. The shift is hard-coded in diffusers, not part of its config, so a plain
``save_pretrained`` / ``from_pretrained`` loses it. This subclass adds one config key,
``timestep_downscale_freq_shift``, and applies it on construction, so a folder written by
``ditlab-export`` loads with the right frequencies through ``DiTPipeline.from_pretrained`` (the
folder's ``model_index.json`` names this class; ditlab must be importable). Without ditlab, load the
folder's transformer as a plain ``DiTTransformer2DModel`` and set
``block.norm1.emb.time_proj.downscale_freq_shift = 0`` on every block (what
:func:`ditlab.models.diffusers_interop.use_official_timestep_frequencies` does).

``fused_qkv: true`` (what ditlab writes) makes every block project q, k and v with one matrix
multiply, as DiT's fused ``attn.qkv`` does, instead of diffusers' three (``to_q``/``to_k``/``to_v``):
the same arithmetic as the ditlab model, so outputs are bit-identical rather than equal up to the
order in which the matrix-multiply kernel sums (different for a 3D-wide and a D-wide product, e.g.
in float64 on CPU). It uses diffusers' own ``Attention.fuse_projections`` and
``FusedAttnProcessor2_0``; the folder keeps ``to_q``/``to_k``/``to_v`` too (the plain class loads
those and ignores ``to_qkv``).
"""

from __future__ import annotations

from diffusers import (
    DiTTransformer2DModel,
    ModelMixin,  # noqa: F401  (DiffusionPipeline's loader looks the base class up in this module)
)
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import FusedAttnProcessor2_0


class DitlabDiTTransformer2DModel(DiTTransformer2DModel):
    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: int | None = None,
        num_layers: int = 28,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        attention_bias: bool = True,
        sample_size: int = 32,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int | None = 1000,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_zero",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-5,
        timestep_downscale_freq_shift: float = 1.0,  # diffusers' value; DiT's is 0 (what ditlab writes)
        fused_qkv: bool = False,  # diffusers' default; ditlab writes true (DiT's single qkv matrix multiply)
    ):
        super().__init__(
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers=num_layers,
            dropout=dropout,
            norm_num_groups=norm_num_groups,
            attention_bias=attention_bias,
            sample_size=sample_size,
            patch_size=patch_size,
            activation_fn=activation_fn,
            num_embeds_ada_norm=num_embeds_ada_norm,
            upcast_attention=upcast_attention,
            norm_type=norm_type,
            norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps,
        )
        for block in self.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = timestep_downscale_freq_shift
            if fused_qkv:  # adds attn1.to_qkv (loaded from the folder like any weight) and uses it
                block.attn1.fuse_projections()
                block.attn1.set_processor(FusedAttnProcessor2_0())
