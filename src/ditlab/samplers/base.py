"""Sampler interface: integrate from noise to data with a (guided) network.

A sampler declares which objective ``families`` it can drive; asking for a DDPM sampler on a
flow-trained checkpoint (or the reverse) is refused with one line. ``model_calls()`` is the cost
in guided-model calls per sample; the NFE that recipes report is counted by
:class:`~ditlab.samplers.guidance.GuidedModel` while sampling (CFG doubling included).
"""

from __future__ import annotations

from typing import Any

import torch

from ditlab.errors import DitlabError
from ditlab.objectives.base import Objective
from ditlab.registry import Registry
from ditlab.samplers.guidance import GuidedModel

SAMPLERS: Registry[type[Sampler]] = Registry("sampler", "sampler")


class Sampler:
    name: str = ""
    families: tuple[str, ...] = ()

    def __init__(self, steps: int = 250):
        if steps <= 0:
            raise DitlabError(f"sampler.steps must be positive, got {steps}")
        self.steps = steps

    def check(self, objective: Objective) -> None:
        if objective.family not in self.families:
            raise DitlabError(
                f"sampler '{self.name}' cannot sample a model trained with the '{objective.family}' objective; "
                f"choose a sampler for that family (sampler=<{'|'.join(_names_for(objective.family))}>)"
            )

    def sample(
        self, model: GuidedModel, objective: Objective, x_T: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Integrate ``x_T`` (noise, N x C x H x W) to data for labels ``y``.

        Call the network only as ``model(x, t, y, noise_level=objective.noise_level(t))``: ``t`` is the
        model time the objective trained with, and ``noise_level`` (0 = data, 1 = pure noise) decides
        whether a guidance interval applies at this step. Use only what :class:`Objective` declares
        for its family; draw all randomness from ``generator``.
        """
        raise NotImplementedError

    def model_calls(self) -> int:
        """Calls of the (guided) model per sample; with CFG active each call is 2 network evaluations."""
        return self.steps

    def describe(self) -> dict[str, Any]:
        return {"sampler": self.name, "steps": self.steps, "model_calls": self.model_calls()}


def check_steps(steps: int, objective: Objective) -> None:
    """A diffusion-family sampler cannot take more steps than the chain the model was trained on."""
    T = objective.diffusion.num_timesteps
    if steps > T:
        raise DitlabError(
            f"sampler.steps={steps} exceeds the {T} steps the model was trained with; set sampler.steps <= {T}"
        )


def _names_for(family: str) -> list[str]:
    return [n for n in SAMPLERS.names() if family in SAMPLERS.get(n).families]
