"""Config group -> object. One function per swappable part; each reads only its own group."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from ditlab.errors import DitlabError
from ditlab.models.dit import DiT, model_kwargs  # model_kwargs: with the model it configures
from ditlab.registry import split_name

if TYPE_CHECKING:
    from ditlab.data import ImageDataModule
    from ditlab.encoders import LatentEncoder
    from ditlab.objectives import Objective
    from ditlab.optim import Schedule
    from ditlab.samplers import Sampler

__all__ = [
    "build_data",
    "build_encoder",
    "build_lr_schedule",
    "build_model",
    "build_objective",
    "build_optimizer",
    "build_sampler",
    "model_kwargs",
]


def build_data(cfg: DictConfig) -> ImageDataModule:
    from ditlab.data import DATASETS  # lazy: ditlab-flops needs build_model only, not Lightning & co.

    return DATASETS.build(cfg)


def build_encoder(cfg: DictConfig) -> LatentEncoder:
    from ditlab.encoders import ENCODERS  # lazy: ditlab-flops needs build_model only, not Lightning & co.

    return ENCODERS.build(cfg)


def build_objective(cfg: DictConfig) -> Objective:
    from ditlab.objectives import OBJECTIVES  # lazy: ditlab-flops needs build_model only, not Lightning & co.

    return OBJECTIVES.build(cfg)


def build_sampler(cfg: DictConfig) -> Sampler:
    from ditlab.samplers import SAMPLERS  # lazy: ditlab-flops needs build_model only, not Lightning & co.

    return SAMPLERS.build(cfg)


def build_optimizer(cfg: DictConfig) -> Callable[..., Any]:
    """``optim`` -> a function ``(named_params, lr) -> Optimizer``. The learning rate stays out of the bound
    options: the module owns it (a resume may change it; the schedule scales it)."""
    from ditlab.optim import OPTIMIZERS  # lazy, as the other parts

    name, module, kwargs = split_name(cfg)
    kwargs.pop("lr", None)
    factory = OPTIMIZERS.get(name, module)
    try:  # built later (it needs the parameters); its options are checked now, before any work
        inspect.signature(factory).bind([], lr=0.0, **kwargs)
    except TypeError as e:
        raise OPTIMIZERS.bad_options(name, e) from None
    return functools.partial(factory, **kwargs)


def build_lr_schedule(cfg: DictConfig | None) -> Schedule | None:
    """``lr_schedule`` -> the step -> multiplier function, or None for a constant rate (no scheduler)."""
    if cfg is None or cfg.get("name") == "constant":
        return None
    from ditlab.optim import SCHEDULES  # lazy, as the other parts

    return SCHEDULES.build(cfg)


def build_model(
    model_cfg: Any, block_cfg: Any, in_channels: int, input_size: int, out_channels: int, num_classes: int
) -> DiT:
    kw = model_kwargs(model_cfg, block_cfg)
    try:
        return DiT(
            input_size=input_size,
            in_channels=in_channels,
            out_channels=out_channels,
            num_classes=num_classes,
            **kw,
        )
    except TypeError as e:
        raise DitlabError(f"bad model options (model.*): {e}") from None


def build_model_for(cfg: DictConfig, data: ImageDataModule, encoder: LatentEncoder, objective: Objective) -> DiT:
    """The backbone for these parts: it reads the encoder's latents of the data's images and outputs what
    the objective predicts, with one class embedding per data class."""
    channels, side = encoder.latent_shape(data.channels, data.resolution)
    return build_model(
        cfg.model,
        cfg.block,
        in_channels=channels,
        input_size=side,
        out_channels=objective.out_channels(channels),
        num_classes=data.num_classes,
    )
