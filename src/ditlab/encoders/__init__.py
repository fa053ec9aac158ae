"""Latent encoders; importing this package registers the built-in ones."""

from ditlab.encoders.base import ENCODERS, IdentityEncoder, LatentEncoder

__all__ = ["ENCODERS", "IdentityEncoder", "LatentEncoder"]
