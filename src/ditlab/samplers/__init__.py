"""Samplers; importing this package registers the built-in ones."""

from ditlab.samplers.base import SAMPLERS, Sampler
from ditlab.samplers.guidance import GuidedModel
from ditlab.samplers import ddpm  # noqa: F401  (registers "ddpm", "ddim")

__all__ = ["SAMPLERS", "Sampler", "GuidedModel"]
