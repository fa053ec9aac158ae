"""Data modules; importing this package registers the built-in ones."""

from ditlab.data import (  # noqa: F401  (register "imagefolder", "latents")
    digits,  # noqa: F401  (registers "digits")
    imagefolder,
    latents,
)
from ditlab.data.base import DATASETS, ImageDataModule

__all__ = ["DATASETS", "ImageDataModule"]
