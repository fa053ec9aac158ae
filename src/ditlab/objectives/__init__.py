"""Diffusion objectives; importing this package registers the built-in ones."""

from ditlab.objectives.base import OBJECTIVES, Objective
from ditlab.objectives import ddpm, flow  # noqa: F401  (registers "ddpm", "flow")

__all__ = ["OBJECTIVES", "Objective"]
