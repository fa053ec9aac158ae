"""A frozen diffusers autoencoder (Stable Diffusion's VAE by default) as the latent encoder.

``encoder=sd_vae`` loads ``AutoencoderKL`` (or ``AutoencoderTiny``, or another diffusers
``Autoencoder*``) with ``from_pretrained`` from a hub id or a local directory. Model space is
``(z - shift) * scale`` with ``z`` a posterior sample (DiT) or the posterior mean; the scale and
shift come from the VAE's config unless overridden, and ``describe()`` records the resolved values
so a checkpoint rebuilds exactly this encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ditlab.encoders.base import ENCODERS, LatentEncoder
from ditlab.errors import DitlabError

log = logging.getLogger("ditlab")
POSTERIORS = ("sample", "mean")


@ENCODERS.register("sd_vae")
class VAEEncoder(LatentEncoder):
    name = "sd_vae"

    def __init__(
        self,
        path: str,
        vae_class: str = "auto",
        subfolder: str | None = None,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        fallback_scaling_factor: float | None = None,
        posterior: str = "sample",
    ):
        super().__init__()
        if posterior not in POSTERIORS:
            raise DitlabError(f"encoder.posterior must be one of {POSTERIORS}, got '{posterior}'")
        local = Path(str(path)).expanduser()
        # A hub id and a relative directory look alike; an existing directory wins.
        self.path = str(local.resolve()) if local.is_dir() else str(path)
        self.subfolder = subfolder
        self.posterior_mode = posterior
        self.vae = load_vae(self.path, vae_class, subfolder).requires_grad_(False).eval()
        self.vae_class = type(self.vae).__name__
        config = self.vae.config
        stated = set(config.keys()) - set(config.get("_use_default_values", []))
        if scaling_factor is None:
            if "scaling_factor" in stated:
                scaling_factor, source = config["scaling_factor"], "from its config.json"
            elif fallback_scaling_factor is not None:  # e.g. sd-vae-ft-ema/-mse: config.json predates the key
                scaling_factor, source = fallback_scaling_factor, "encoder.fallback_scaling_factor"
            else:
                scaling_factor, source = config.get("scaling_factor") or 1.0, f"diffusers' {self.vae_class} default"
            log.info("VAE scaling factor %s (%s; set encoder.scaling_factor to override)", scaling_factor, source)
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor if shift_factor is not None else (config.get("shift_factor") or 0.0))
        self.in_channels = int(config["in_channels"])
        self.latent_channels = int(config["latent_channels"])
        blocks = config.get("encoder_block_out_channels") or config.get("block_out_channels")
        self.downsample = 2 ** (len(blocks) - 1)

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int]:
        if channels != self.in_channels:
            raise DitlabError(
                f"encoder=sd_vae ({self.path}) takes {self.in_channels}-channel images but the data has {channels}; "
                "use an RGB dataset (data=imagefolder) or encoder=identity"
            )
        if resolution % self.downsample:
            raise DitlabError(
                f"data.resolution={resolution} is not a multiple of the VAE's downsampling factor {self.downsample}"
            )
        return self.latent_channels, resolution // self.downsample

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Outside autocast: the VAE runs in its own dtype under bf16-mixed training too, so the loop
        # that encodes every step and a latent cache see the same latents.
        with torch.autocast(x.device.type, enabled=False):
            out = self.vae.encode(x.to(self.vae.dtype))
        dist = getattr(out, "latent_dist", None)
        if dist is None:  # AutoencoderTiny: deterministic latents
            return out.latents.float(), None
        return dist.mean.float(), dist.std.float()

    def latent_from_posterior(
        self, mean: torch.Tensor, std: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        z = mean
        if std is not None and self.posterior_mode == "sample":  # DiagonalGaussianDistribution.sample()
            gen_device = generator.device if generator is not None else mean.device
            eps = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=mean.dtype)
            z = mean + std * eps.to(mean.device)
        return (z - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.latent_from_posterior(*self.posterior(x), generator=generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # DiTPipeline's expression (1/s, then a multiply; DiT's sample.py divides, one rounding apart), so a
        # ditlab-export folder decodes bit-identically to ditlab-sample.
        z = 1 / self.scaling_factor * z
        if self.shift_factor:
            z = z + self.shift_factor
        with torch.autocast(z.device.type, enabled=False):
            return self.vae.decode(z.to(self.vae.dtype)).sample.float()

    def describe(self) -> dict[str, Any]:
        # Exactly the constructor's arguments, resolved: build_encoder(describe()) rebuilds this encoder.
        return {
            "name": self.name,
            "path": self.path,
            "vae_class": self.vae_class,
            "subfolder": self.subfolder,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "posterior": self.posterior_mode,
        }


def load_vae(path: str, vae_class: str, subfolder: str | None) -> torch.nn.Module:
    """``from_pretrained`` on a local directory or a hub id (hub cache first, then the network)."""
    import diffusers  # lazy for start-up: only VAE encoders need diffusers, and it is slow to import

    kwargs = {"subfolder": subfolder, "low_cpu_mem_usage": False}
    hint = (
        f"set encoder.path to a local directory holding the VAE's config.json and weights "
        f"(or download '{path}' once with network access)"
    )
    try:
        if vae_class == "auto":
            try:
                config = diffusers.AutoencoderKL.load_config(path, subfolder=subfolder, local_files_only=True)
            except (OSError, ValueError):
                config = diffusers.AutoencoderKL.load_config(path, subfolder=subfolder)
            vae_class = config.get("_class_name", "AutoencoderKL")
        cls = getattr(diffusers, vae_class, None)
        if cls is None or not vae_class.startswith(("Autoencoder", "AsymmetricAutoencoder")):
            raise DitlabError(
                f"encoder.vae_class='{vae_class}' is not a diffusers autoencoder; use auto, AutoencoderKL or AutoencoderTiny"
            )
        try:
            return cls.from_pretrained(path, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DitlabError(f"cannot load the VAE '{path}' (encoder.path): {reason[:200]}; {hint}") from None
