"""What ``ditlab-sample`` samples from: a ditlab checkpoint or an official DiT state dict.

Either way the result is the same bundle (network, objective, encoder, latent shape, classes), so
the sampling code never asks where the weights came from. A ditlab checkpoint carries everything
in ``ckpt["ditlab"]`` (resolved config, objective, encoder, data); an official DiT file carries
only weights, so its architecture (``name``, ``image_size``, ``num_classes``) and VAE (``encoder``)
come from the command line, and its objective is DiT's improved DDPM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ditlab.build import build_encoder, build_objective
from ditlab.checkpoints.checkpoint_file import is_ditlab_checkpoint, read_checkpoint
from ditlab.checkpoints.stored_config import stored_config
from ditlab.encoders.base import LatentEncoder
from ditlab.errors import DitlabError
from ditlab.models.official import from_official
from ditlab.objectives.base import Objective
from ditlab.objectives.ddpm import DDPMObjective

# The official DiT sample scripts: ancestral DDPM on the "250" respaced chain.
OFFICIAL_SAMPLER = {"name": "ddpm", "steps": 250, "clip_denoised": False}
WEIGHTS = ("ema", "model")


@dataclass
class SampleSource:
    model: torch.nn.Module
    objective: Objective
    encoder: LatentEncoder
    latent_shape: tuple[int, int]  # (channels, side) the network works on
    num_classes: int
    default_sampler: dict[str, Any]  # the sampler to use when the command line names none
    info: dict[str, Any] = field(default_factory=dict)  # recorded with the samples
    default_out: Path = Path("samples")


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.ckpt`` file, or a run directory (-> its ``checkpoints/last.ckpt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise DitlabError(f"ckpt={path}: no such checkpoint file (pass a .ckpt file or a run directory)")
    return p


def read_run_checkpoint(
    path: str | Path, plugins: tuple[str, ...], not_ditlab: str
) -> tuple[Path, dict[str, Any], DictConfig]:
    """(file, checkpoint, stored config) of a ditlab training checkpoint (or run directory), read with
    weights only and checked; ``not_ditlab``: what to tell a user who passed another kind of file."""
    ckpt_path = resolve_checkpoint(path)
    ckpt = read_checkpoint(ckpt_path)
    if not is_ditlab_checkpoint(ckpt):
        raise DitlabError(f"{ckpt_path} is not a ditlab checkpoint (no 'ditlab' metadata){not_ditlab}")
    return ckpt_path, ckpt, stored_config(ckpt, str(ckpt_path), trusted_modules=plugins)  # data: no imports


def load_ditlab(
    path: str | Path, weights: str = "ema", encoder_cfg: DictConfig | None = None, plugins: tuple[str, ...] = ()
) -> SampleSource:
    """``plugins``: modules the checkpoint's config may name (the user's word; see ditlab.checkpoints.stored_config)."""
    if weights not in WEIGHTS:
        raise DitlabError(f"weights must be one of {WEIGHTS}, got '{weights}'")
    ckpt_path, ckpt, cfg = read_run_checkpoint(
        path,
        plugins,
        "; for an official DiT state dict use official=<path> name=DiT-XL/2 image_size=256 encoder=sd_vae",
    )
    meta = ckpt["ditlab"]
    objective = build_objective(cfg.objective)
    # The run's own encoder, rebuilt from its recorded (resolved) description so the scaling factor is
    # the one it trained with, unless the command line picks one (e.g. another decoder of the same VAE).
    encoder = build_encoder(encoder_cfg if encoder_cfg is not None else meta.get("encoder", cfg.encoder))
    data = meta["data"]
    latent_shape = encoder.latent_shape(int(data["channels"]), int(data["resolution"]))
    model = from_official(ckpt, use_ema=weights == "ema", plugins=plugins)
    _check_fits(model, latent_shape, "encoder")
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    return SampleSource(
        model=model,
        objective=objective,
        encoder=encoder,
        latent_shape=latent_shape,
        num_classes=int(data["num_classes"]),
        default_sampler=OmegaConf.to_container(cfg.sampler, resolve=True),
        info={
            "source": "ditlab",
            "checkpoint": str(ckpt_path.resolve()),
            "weights": weights,
            "step": ckpt.get("global_step"),
            "objective": objective.describe(),
            "data": data,
            "run": cfg.get("run_name"),
        },
        default_out=run_dir / "samples" / ckpt_path.stem,
    )


def load_official(
    path: str | Path, name: str, image_size: int, num_classes: int, encoder_cfg: DictConfig | None, root: Path
) -> SampleSource:
    if encoder_cfg is None:
        raise DitlabError("official DiT checkpoints are latent-space models: choose their VAE with encoder=sd_vae")
    ckpt = read_checkpoint(path)
    if is_ditlab_checkpoint(ckpt):
        raise DitlabError(f"{path} is a ditlab checkpoint; pass it as ckpt={path} (its config is read from it)")
    encoder = build_encoder(encoder_cfg)
    channels, side = encoder.latent_shape(3, int(image_size))
    model = from_official(ckpt, name=name, input_size=side, num_classes=int(num_classes), in_channels=channels)
    objective = DDPMObjective()  # DiT: 1000-step linear schedule, ε prediction, learned-range Σ
    return SampleSource(
        model=model,
        objective=objective,
        encoder=encoder,
        latent_shape=(channels, side),
        num_classes=int(num_classes),
        default_sampler=dict(OFFICIAL_SAMPLER),
        info={
            "source": "official",
            "checkpoint": str(Path(path).resolve()),
            "name": name,
            "image_size": int(image_size),
            "objective": objective.describe(),
        },
        default_out=root / "samples" / f"{name.replace('/', '-')}-{int(image_size)}",
    )


def _check_fits(model: torch.nn.Module, latent_shape: tuple[int, int], option: str) -> None:
    channels, side = latent_shape
    if (model.in_channels, model.input_size) != (channels, side):
        raise DitlabError(
            f"the {option} gives {channels}x{side}x{side} latents but the model takes "
            f"{model.in_channels}x{model.input_size}x{model.input_size}; pick the {option} the model was trained with"
        )
