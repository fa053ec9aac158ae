"""Diffusion objectives; importing this package registers the built-in ones."""

from ditlab.objectives import ddpm, flow  # noqa: F401  (registers "ddpm", "flow")
from ditlab.objectives.base import OBJECTIVES, Objective

__all__ = ["OBJECTIVES", "Objective"]
