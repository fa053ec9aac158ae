"""Latent encoders; importing this package registers the built-in ones."""

from ditlab.encoders import vae  # noqa: F401  (registers "sd_vae"; diffusers is imported on first use)
from ditlab.encoders.base import ENCODERS, IdentityEncoder, LatentEncoder

__all__ = ["ENCODERS", "IdentityEncoder", "LatentEncoder"]
