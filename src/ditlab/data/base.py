"""Data modules yield ``(images in [-1, 1] of shape (N, C, R, R), int labels)`` batches.

A latent cache yields cached posteriors in place of images, and, when an auxiliary loss reads
targets stored with it (REPA's encoder features), a third element holding them.

``batch_size`` in every data config is the *global* batch (as in DiT's ``--global-batch-size``);
each of the ``world_size`` processes loads ``batch_size / world_size`` so results do not depend
on how many devices ran them.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from ditlab.errors import DitlabError
from ditlab.registry import Registry

DATASETS: Registry[type[ImageDataModule]] = Registry("dataset", "data")


class ImageDataModule(L.LightningDataModule):
    name: str = ""
    num_classes: int = 0
    channels: int = 3
    resolution: int = 0

    def __init__(self, batch_size: int, num_workers: int = 0):
        super().__init__()
        if batch_size <= 0:
            raise DitlabError(f"data.batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers

    def per_device_batch_size(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise DitlabError(
                f"data.batch_size={self.batch_size} (global) is not divisible by the {world} processes; "
                f"set data.batch_size to a multiple of {world}"
            )
        return self.batch_size // world

    def adapt_encoder(self, encoder: Any) -> Any:
        """The encoder the training loop applies to this data's batches. Image data: ``encoder`` itself;
        a latent cache checks it against its manifest and returns one that reads cached posteriors."""
        return encoder

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "resolution": self.resolution,
            "batch_size": self.batch_size,
        }
