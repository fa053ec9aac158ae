"""Official DiT checkpoints (and ditlab's own) -> a ditlab :class:`~ditlab.models.dit.DiT`.

ditlab's backbone uses the official parameter names and order (DiT's ``models.py``), so loading is
a shape-checked ``load_state_dict``. Three file formats are understood:

* a **bare state dict**, like the published ``DiT-XL-2-256x256.pt`` / ``DiT-XL-2-512x512.pt``;
* a **training checkpoint** of the official ``train.py`` (``{"model", "ema", "opt", "args"}``),
  or any dict with ``model`` / ``ema`` state dicts: the EMA weights are used when present;
* a **ditlab checkpoint** (``runs/<run>/checkpoints/*.ckpt``): ``model.`` / ``ema.`` prefixed
  weights plus the run's config, from which the architecture (any block) is rebuilt.

Every file is read by :func:`ditlab.checkpoints.checkpoint_file.read_checkpoint` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

# Reading and checking checkpoint files lives with the rest of the checkpoint code (ditlab/checkpoints/);
# these names stay importable from here, where ditlab-sample and users' scripts have found them.
from ditlab.checkpoints.checkpoint_file import StateDict as StateDict
from ditlab.checkpoints.checkpoint_file import check_weights as check_weights
from ditlab.checkpoints.checkpoint_file import extract_state_dict as extract_state_dict
from ditlab.checkpoints.checkpoint_file import is_ditlab_checkpoint as is_ditlab_checkpoint
from ditlab.checkpoints.checkpoint_file import load_initial_weights as load_initial_weights
from ditlab.checkpoints.checkpoint_file import load_weights as load_weights
from ditlab.checkpoints.checkpoint_file import read_checkpoint as read_checkpoint
from ditlab.checkpoints.stored_config import stored_config
from ditlab.config import CONFIG_DIR, compose
from ditlab.errors import DitlabError
from ditlab.models.dit import DiT, model_kwargs, model_tag
from ditlab.models.layers import get_2d_sincos_pos_embed

log = logging.getLogger("ditlab")

_NAME = re.compile(r"^DiT-(?P<size>[A-Za-z0-9_]+)[/-](?P<patch>\d+)$")  # DiT-XL/2 or DiT-XL-2


def from_official(
    state_dict_or_path: StateDict | Mapping[str, Any] | str | Path,
    name: str = "DiT-XL/2",
    input_size: int = 32,
    num_classes: int = 1000,
    *,
    use_ema: bool = True,
    in_channels: int = 4,
    learn_sigma: bool = True,
    plugins: tuple[str, ...] = (),
    **model_overrides: Any,
) -> DiT:
    """Build the ditlab model for an official DiT checkpoint and load its weights (returned in eval mode).

    Args:
        state_dict_or_path: a state dict, a checkpoint dict (``model``/``ema`` entries, or a ditlab
            Lightning checkpoint), or a path to any of them.
        name: ``DiT-<size>/<patch>`` (``DiT-XL-2`` also accepted); ``<size>`` is a preset in
            ``conf/model/`` (S, B, L, XL, tiny, small) giving depth, width and heads.
        input_size: latent side: 32 for the 256x256 checkpoint, 64 for 512x512.
        num_classes: 1000 for the ImageNet checkpoints (the label table has one extra null row).
        use_ema: take the ``ema`` weights of a training/ditlab checkpoint (else ``model``).
        in_channels, learn_sigma: latent channels; learned Σ doubles the output channels.
        plugins: modules a ditlab checkpoint's config may name for its block (a checkpoint never
            chooses code to import by itself; see :mod:`ditlab.checkpoints.stored_config`).
        **model_overrides: any other :class:`DiT` argument, e.g. ``depth=2, hidden_size=64`` for a
            non-preset model, or ``attn_backend="math"``.

    A ditlab checkpoint carries its own architecture: ``name``, ``input_size`` and ``num_classes``
    are then read from the checkpoint instead. The output of ``forward(x, t, y)`` equals the official
    implementation's (N, 2C, H, W) output to float32 precision (tested against numbers the official ``models.py`` produced
    for a deterministically filled tiny DiT).
    """
    source = _describe(state_dict_or_path)
    ckpt = read_checkpoint(state_dict_or_path)
    if is_ditlab_checkpoint(ckpt):
        log.info("%s is a ditlab checkpoint: architecture read from its config", source)
        return model_from_ditlab_checkpoint(ckpt, use_ema=use_ema, source=source, plugins=plugins, **model_overrides)
    state_dict = extract_state_dict(ckpt, use_ema=use_ema, source=source)
    size, patch_size = parse_name(name)
    kwargs = {**model_preset(size), "patch_size": patch_size, **model_overrides}
    try:
        with torch.device("meta"):  # shapes only: a wrong file fails before gigabytes are allocated
            model = DiT(
                input_size=input_size,
                in_channels=in_channels,
                out_channels=2 * in_channels if learn_sigma else in_channels,
                num_classes=num_classes,
                block="adaln_zero",  # the only design the official code (and its checkpoints) has
                **kwargs,
            )
    except TypeError as e:
        raise DitlabError(f"bad model option for from_official: {e}") from None
    check_weights(
        model, state_dict, source, f"{model_tag(size, patch_size)} (input_size={input_size}, num_classes={num_classes})"
    )
    return _materialize(model, state_dict)


def _materialize(model: DiT, state_dict: StateDict) -> DiT:
    """The meta-device ``model`` on the CPU with the checked weights (returned in eval mode)."""
    # Every tensor comes from the file (no random init to pay for on XL); pos_embed is the fixed table.
    model = model.to_empty(device="cpu")
    if "pos_embed" not in state_dict:
        table = get_2d_sincos_pos_embed(model.pos_embed.shape[-1], model.x_embedder.grid_size)
        model.pos_embed.data.copy_(torch.from_numpy(table).float().unsqueeze(0))
    model.load_state_dict(dict(state_dict), strict="pos_embed" in state_dict)
    return model.eval()


def model_from_ditlab_checkpoint(
    ckpt: Mapping[str, Any],
    use_ema: bool = True,
    source: str = "checkpoint",
    plugins: tuple[str, ...] = (),
    cfg: DictConfig | None = None,
    **model_overrides: Any,
) -> DiT:
    """Rebuild a ditlab run's model (any block) from its checkpoint config and load its weights;
    ``cfg``: that config where the caller has read and checked it already (else read here)."""
    meta = ckpt["ditlab"]
    if cfg is None:
        cfg = stored_config(ckpt, source, trusted_modules=plugins)
    sd = extract_state_dict(ckpt, use_ema=use_ema, source=source)
    proj = sd["x_embedder.proj.weight"]  # (D, C, p, p)
    p = proj.shape[-1]
    tokens = meta.get("model_stats", {}).get("tokens") or sd["pos_embed"].shape[1]  # rope2d runs have no table
    grid = math.isqrt(int(tokens))
    kwargs = {**model_kwargs(cfg.model, cfg.block), **model_overrides}
    try:
        model = DiT(
            input_size=grid * p,
            in_channels=proj.shape[1],
            out_channels=sd["final_layer.linear.weight"].shape[0] // (p * p),
            num_classes=int(meta["data"]["num_classes"]),
            **kwargs,
        )
    except TypeError as e:  # a stored model.*/block.* key this ditlab's DiT does not take
        raise DitlabError(
            f"{source}: its stored config has model/block options this ditlab does not know ({e}); the file was "
            "written by another ditlab version or edited: use a checkpoint of this version"
        ) from None
    load_weights(model, sd, source=source, target=model_tag(cfg.model.name, cfg.model.patch_size))
    return model.eval()


def parse_name(name: str) -> tuple[str, int]:
    m = _NAME.match(name or "")
    if not m:
        raise DitlabError(f"model name '{name}' is not of the form DiT-<size>/<patch>, e.g. DiT-XL/2")
    return m["size"], int(m["patch"])


def model_preset(size: str) -> dict[str, Any]:
    """Depth, width, heads and MLP ratio of a ``conf/model/<size>.yaml`` preset (its defaults resolved)."""
    folder = Path(CONFIG_DIR) / "model"
    if not (folder / f"{size}.yaml").is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise DitlabError(f"unknown model size '{size}' in the model name; known sizes: {known}")
    merged = compose(None, [f"+model={size}"]).model  # composed by Hydra, defaults and all
    keep = ("depth", "hidden_size", "num_heads", "mlp_ratio", "class_dropout_prob")
    return {k: merged[k] for k in keep if k in merged}


def _describe(obj: Any) -> str:
    return "the given state dict" if isinstance(obj, Mapping) else str(obj)
