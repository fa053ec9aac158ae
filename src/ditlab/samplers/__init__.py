"""Samplers; importing this package registers the built-in ones."""

from ditlab.samplers import ddpm, diffusers_sampler, flow  # noqa: F401  (registers the built-in samplers)
from ditlab.samplers.base import SAMPLERS, Sampler
from ditlab.samplers.guidance import GuidedModel

__all__ = ["SAMPLERS", "Sampler", "GuidedModel"]
