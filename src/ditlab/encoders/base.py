"""Latent encoders: what the diffusion model sees instead of pixels.

The Lightning module only ever calls ``encode`` (images in [-1, 1] -> model space) and
``decode`` (model space -> images in [-1, 1]), so pixel space and a VAE are interchangeable.
Encoders are frozen: no gradients, eval mode, excluded from Gflops and from the optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ditlab.registry import Registry

ENCODERS: Registry[type[LatentEncoder]] = Registry("encoder", "encoder")


class LatentEncoder(nn.Module):
    name: str = ""

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int]:
        """(latent channels, latent side) for images of ``channels`` x ``resolution``²."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # A latent cache stores ``posterior(x)`` once and calls ``latent_from_posterior`` every step, so the
    # cached loop draws the same latents as ``encode`` (which encoders define as the composition of the two).
    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unscaled posterior (mean, std) of images in [-1, 1]; std is None for a deterministic encoder."""
        return self.encode(x), None

    def latent_from_posterior(
        self, mean: torch.Tensor, std: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Model-space latents from ``posterior``'s output (sample or mean, then scale and shift)."""
        return mean

    def describe(self) -> dict[str, Any]:
        """Identity and scaling of the encoder, stored in checkpoints and summaries."""
        return {"name": self.name}

    def train(self, mode: bool = True) -> LatentEncoder:
        # Always frozen: Lightning's model.train() must not switch the encoder to training mode.
        return super().train(False)


@ENCODERS.register("identity")
class IdentityEncoder(LatentEncoder):
    """Pixel space: the model diffuses the [-1, 1] images themselves."""

    name = "identity"

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int]:
        return channels, resolution

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z
