"""The objective interface: how a network output is trained, independent of the network.

An objective turns clean latents into a per-sample loss given a ``model_fn(x, t, **kw)``; the
backbone and the objective meet only at that call.

What samplers may use (the whole contract; a sampler touches nothing else):

* every objective: ``family`` (which samplers can drive it), ``out_channels``, ``describe`` and
  :meth:`Objective.noise_level`, the one place a model time becomes the common noise level that
  classifier-free guidance intervals read;
* family ``ddpm``: ``diffusion``, a :class:`~ditlab.objectives.gaussian.GaussianDiffusion` (betas,
  ``num_timesteps``, ``respace``, ``p_sample``, ``ddim_sample``, ``mean_type``);
* family ``flow``: ``interval(eval=True)`` (the ODE's time span) and ``velocity(out, x, t)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ditlab.registry import Registry

if TYPE_CHECKING:
    from ditlab.objectives.gaussian import GaussianDiffusion

OBJECTIVES: Registry[type[Objective]] = Registry("objective", "objective")

ModelFn = Callable[..., torch.Tensor]


class Objective:
    family: str = ""  # "ddpm" | "flow" | a new family with its own samplers
    name: str = ""
    diffusion: GaussianDiffusion | None = None  # family "ddpm": the training chain samplers respace

    def noise_level(self, t: float) -> float:
        """Where model time ``t`` (what the network is given) lies between data (0) and pure noise (1)."""
        raise NotImplementedError

    def out_channels(self, in_channels: int) -> int:
        """Channels the backbone must output for ``in_channels`` input channels."""
        return in_channels

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, model_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sample loss terms; ``"loss"`` is the one that is optimised."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Plain-data description stored in checkpoints and summaries."""
        raise NotImplementedError
