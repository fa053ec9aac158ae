"""The encoder the training loop uses when batches come from a latent cache.

The cache holds each image's unscaled posterior (mean, std) — see ``ditlab.latent_cache``. Batches arrive
as ``cat([mean, std], dim=1)`` (or the mean alone for a deterministic encoder), and ``encode``
draws the model-space latent with the real encoder's ``latent_from_posterior``: a fresh posterior
sample every step, as in DiT's loop, without running the VAE. Decoding and ``describe()`` are the
real encoder's, so checkpoints and samples do not know a cache was used.
"""

from __future__ import annotations

from typing import Any

import torch

from ditlab.encoders.base import LatentEncoder


class CachedPosteriorEncoder(LatentEncoder):
    def __init__(self, encoder: LatentEncoder, has_std: bool):
        super().__init__()
        self.inner = encoder
        self.has_std = has_std
        self.name = encoder.name

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int]:
        return self.inner.latent_shape(channels, resolution)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # x: (N, 2C, h, w) = [mean | std], or (N, C, h, w) = mean
        mean, std = x.chunk(2, dim=1) if self.has_std else (x, None)
        return self.inner.latent_from_posterior(mean, std, generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(z)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
