"""adaLN-Zero ditlab models <-> diffusers ``DiTTransformer2DModel`` (for ``DiTPipeline``), same outputs.

Key mapping (official ``models.py`` names -> diffusers): ``x_embedder.proj`` -> ``pos_embed.proj``; the fused ``attn.qkv``
-> ``attn1.to_qkv`` (diffusers' fused projection, which the exported class uses) and, split, ``attn1.to_q/to_k/to_v``; ``attn.proj`` -> ``attn1.to_out.0``; ``mlp.fc1/fc2`` ->
``ff.net.0.proj`` / ``ff.net.2``; ``adaLN_modulation.1`` -> ``norm1.linear``; the final layer ->
``proj_out_1`` (modulation) / ``proj_out_2`` (linear). diffusers has no shared embedders: the
timestep MLP and label table are copied into **every** block, and its final layer reads block 0's.

Four diffusers behaviours differ from DiT and are set on every block of an exported model:

* timestep frequencies: diffusers uses ``downscale_freq_shift=1`` (exp(-ln 1e4 * k / 127)); DiT
  uses 0 (k / 128). With converted weights the outputs differ by O(1) (max |Δ| 3.6 on a toy model)
  unless it is 0. diffusers hard-codes it, so the export is a
  :class:`~ditlab.models.diffusers_transformer.DitlabDiTTransformer2DModel`, whose config stores the
  shift (``timestep_downscale_freq_shift: 0``) and which applies it when loaded; a folder loaded as
  a plain ``DiTTransformer2DModel`` needs :func:`use_official_timestep_frequencies` again;
* label dropout is drawn independently per block in training: set to 0 (drop labels yourself,
  by passing the null id ``num_classes``, if you fine-tune in diffusers);
* LayerNorm eps: built with ``norm_eps=1e-6`` like DiT (diffusers' default is 1e-5).
* q/k/v: diffusers projects them with three matrix multiplies, DiT with one (``attn.qkv``); the
  same sums in a different order (a kernel may sum a 3D-wide product differently from a D-wide one:
  max |Δ| 1e-12 in float64 on CPU), so the export uses diffusers' fused projection (``fused_qkv``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.models.blocks import AdaLNZeroBlock
from ditlab.models.dit import DiT
from ditlab.models.layers import get_2d_sincos_pos_embed

log = logging.getLogger("ditlab")

# (ditlab suffix, diffusers suffix) inside one block, besides the split qkv.
_BLOCK_KEYS = [
    ("attn.proj", "attn1.to_out.0"),
    ("mlp.fc1", "ff.net.0.proj"),
    ("mlp.fc2", "ff.net.2"),
    ("adaLN_modulation.1", "norm1.linear"),
]
# Shared ditlab embedders -> their per-block diffusers copies (prefix transformer_blocks.{i}.norm1.emb.).
_EMBEDDER_KEYS = [
    ("t_embedder.mlp.0", "timestep_embedder.linear_1"),
    ("t_embedder.mlp.2", "timestep_embedder.linear_2"),
]
_TOP_KEYS = [
    ("x_embedder.proj", "pos_embed.proj"),
    ("final_layer.adaLN_modulation.1", "proj_out_1"),
    ("final_layer.linear", "proj_out_2"),
]
_WB = ("weight", "bias")


def to_diffusers(model: DiT):
    """An equivalent ``diffusers.DiTTransformer2DModel`` (eval mode) for an adaLN-Zero ditlab model.

    ``transformer(x, timestep=t, class_labels=y).sample`` equals ``model(x, t, y)`` bit for bit (same
    operations in the same order, q/k/v fused as in DiT): (N, C_out, H, W), learned-Σ channels included
    (``out_channels`` is set explicitly).
    """
    # lazy: diffusers is slow to import and only this needs it
    from ditlab.models.diffusers_transformer import DitlabDiTTransformer2DModel

    _check_exportable(model)
    D = model.pos_embed.shape[-1]
    transformer = DitlabDiTTransformer2DModel(
        num_attention_heads=model.num_heads,
        attention_head_dim=D // model.num_heads,
        in_channels=model.in_channels,
        out_channels=model.out_channels,
        num_layers=len(model.blocks),
        sample_size=model.input_size,
        patch_size=model.patch_size,
        activation_fn="gelu-approximate",  # DiT's MLP: GELU, tanh approximation
        num_embeds_ada_norm=model.num_classes,
        norm_eps=1e-6,
        timestep_downscale_freq_shift=0,  # DiT's frequencies, stored in the config (survives save/load)
        fused_qkv=True,  # DiT's one qkv matrix multiply: bit-identical outputs, not just equal up to summation order
    )
    src = model.state_dict()
    dst: dict[str, torch.Tensor] = {}
    for ours, theirs in _TOP_KEYS:
        for wb in _WB:
            dst[f"{theirs}.{wb}"] = src[f"{ours}.{wb}"]
    table = src["y_embedder.embedding_table.weight"]  # diffusers always has num_classes + 1 rows
    if table.shape[0] == model.num_classes:  # trained without label dropout: no null row; add an unused one
        table = torch.cat([table, torch.zeros_like(table[:1])])
    for i in range(len(model.blocks)):
        b, e = f"transformer_blocks.{i}.", f"transformer_blocks.{i}.norm1.emb."
        for wb in _WB:
            qkv = src[f"blocks.{i}.attn.qkv.{wb}"]
            dst[f"{b}attn1.to_qkv.{wb}"] = qkv  # what runs (fused_qkv=True)
            q, k, v = qkv.chunk(3, dim=0)  # fused [q | k | v] rows, for diffusers' plain class and from_diffusers
            dst[f"{b}attn1.to_q.{wb}"], dst[f"{b}attn1.to_k.{wb}"], dst[f"{b}attn1.to_v.{wb}"] = q, k, v
            for ours, theirs in _BLOCK_KEYS:
                dst[f"{b}{theirs}.{wb}"] = src[f"blocks.{i}.{ours}.{wb}"]
            for ours, theirs in _EMBEDDER_KEYS:
                dst[f"{e}{theirs}.{wb}"] = src[f"{ours}.{wb}"]
        dst[f"{e}class_embedder.embedding_table.weight"] = table
    transformer.load_state_dict({k: v.clone() for k, v in dst.items()}, strict=True)
    use_official_timestep_frequencies(transformer)
    for block in transformer.transformer_blocks:
        block.norm1.emb.class_embedder.dropout_prob = 0.0  # no independent per-block label dropout
    return transformer.eval()


def from_diffusers(transformer) -> DiT:
    """A ditlab adaLN-Zero :class:`DiT` (eval mode) with the weights of a ``DiTTransformer2DModel``.

    The per-block embedder copies must be equal (true for anything exported by :func:`to_diffusers`
    and for the hub's converted DiT checkpoints). ditlab always embeds timesteps with the official
    frequencies; a transformer still using diffusers' ``downscale_freq_shift=1`` therefore gives
    slightly different outputs from the returned model (a warning says so).
    """
    cfg = transformer.config
    if cfg.norm_type != "ada_norm_zero" or cfg.activation_fn != "gelu-approximate":
        raise DitlabError(
            f"only adaLN-Zero DiTs with tanh-GELU MLPs convert (norm_type='{cfg.norm_type}', "
            f"activation_fn='{cfg.activation_fn}')"
        )
    src = transformer.state_dict()
    _check_shared_embedders(src, cfg.num_layers)
    if transformer.transformer_blocks[0].norm1.emb.time_proj.downscale_freq_shift != 0:
        log.warning(
            "the diffusers transformer uses downscale_freq_shift=1; the ditlab model uses DiT's "
            "official timestep frequencies (shift 0), so outputs differ slightly"
        )
    D = cfg.num_attention_heads * cfg.attention_head_dim
    with torch.device("meta"):  # every tensor is copied from the transformer below
        model = DiT(
            input_size=cfg.sample_size,
            patch_size=cfg.patch_size,
            in_channels=cfg.in_channels,
            out_channels=transformer.out_channels,
            hidden_size=D,
            depth=cfg.num_layers,
            num_heads=cfg.num_attention_heads,
            num_classes=cfg.num_embeds_ada_norm,
            class_dropout_prob=0.1,  # diffusers' label table always has the null row
            block="adaln_zero",
        )
    dst: dict[str, torch.Tensor] = {}
    for ours, theirs in _TOP_KEYS:
        for wb in _WB:
            dst[f"{ours}.{wb}"] = src[f"{theirs}.{wb}"]
    e0 = "transformer_blocks.0.norm1.emb."
    for ours, theirs in _EMBEDDER_KEYS:
        for wb in _WB:
            dst[f"{ours}.{wb}"] = src[f"{e0}{theirs}.{wb}"]
    dst["y_embedder.embedding_table.weight"] = src[f"{e0}class_embedder.embedding_table.weight"]
    for i in range(cfg.num_layers):
        b = f"transformer_blocks.{i}."
        for wb in _WB:
            dst[f"blocks.{i}.attn.qkv.{wb}"] = torch.cat([src[f"{b}attn1.to_{n}.{wb}"] for n in "qkv"], dim=0)
            for ours, theirs in _BLOCK_KEYS:
                dst[f"blocks.{i}.{ours}.{wb}"] = src[f"{b}{theirs}.{wb}"]
    model = model.to_empty(device=transformer.device)

    table = get_2d_sincos_pos_embed(D, model.x_embedder.grid_size)  # diffusers recomputes it too
    dst["pos_embed"] = torch.from_numpy(table).float().unsqueeze(0)
    model.load_state_dict({k: v.detach().clone() for k, v in dst.items()}, strict=True)
    return model.eval()


def use_official_timestep_frequencies(transformer) -> None:
    """Make every block embed timesteps like DiT (frequencies exp(-ln 1e4 * k / 128))."""
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0


def _check_exportable(model: DiT) -> None:
    if not all(isinstance(b, AdaLNZeroBlock) for b in model.blocks):
        raise DitlabError(
            f"only adaLN-Zero models export to diffusers' DiTTransformer2DModel (this one uses block "
            f"'{model.block_name}')"
        )
    block = model.blocks[0]
    if (
        model.position != "sincos"
        or block.norm_kind != "layernorm"
        or not hasattr(block.mlp, "fc1")
        or not isinstance(block.attn.q_norm, nn.Identity)
    ):
        raise DitlabError(
            "diffusers' DiTTransformer2DModel has the paper's DiT blocks only; export a model trained with the "
            "default block.norm, block.mlp, block.qk_norm and block.position"
        )
    fc1 = block.mlp.fc1
    if fc1.out_features != 4 * fc1.in_features:
        raise DitlabError(f"diffusers' DiT has MLP ratio 4; this model has {fc1.out_features / fc1.in_features:g}")


def _check_shared_embedders(src: dict, num_layers: int) -> None:
    e0 = "transformer_blocks.0.norm1.emb."
    for i in range(1, num_layers):
        ei = f"transformer_blocks.{i}.norm1.emb."
        for key in [k[len(e0) :] for k in src if k.startswith(e0)]:
            if not torch.equal(src[e0 + key], src[ei + key]):
                raise DitlabError(
                    f"block {i}'s embedder '{key}' differs from block 0's; ditlab shares one timestep/label "
                    "embedder across blocks, so this transformer cannot be converted exactly"
                )
