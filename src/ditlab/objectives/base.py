"""The objective interface: how a network output is trained, independent of the network.

An objective turns clean latents into a per-sample loss given a ``model_fn(x, t, **kw)``; the
backbone and the objective meet only at that call. ``family`` tells which samplers can use it
(``ddpm`` samplers need the Gaussian-diffusion tables, ``flow`` samplers integrate a velocity).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ditlab.registry import Registry

OBJECTIVES: Registry[type["Objective"]] = Registry("objective", "objective")

ModelFn = Callable[..., torch.Tensor]


class Objective:
    family: str = ""
    name: str = ""

    def out_channels(self, in_channels: int) -> int:
        """Channels the backbone must output for ``in_channels`` input channels."""
        return in_channels

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, model_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sample loss terms; ``"loss"`` is the one that is optimised."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Plain-data description stored in checkpoints and summaries."""
        raise NotImplementedError
