"""Data modules; importing this package registers the built-in ones."""

from ditlab.data.base import DATASETS, ImageDataModule
from ditlab.data import digits  # noqa: F401  (registers "digits")
from ditlab.data import imagefolder, latents  # noqa: F401  (register "imagefolder", "latents")

__all__ = ["DATASETS", "ImageDataModule"]
