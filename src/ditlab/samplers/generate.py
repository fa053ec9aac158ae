"""Noise -> sampler -> decoder -> uint8 images, streamed in batches.

Used by the end of training, ``ditlab-sample`` and the evaluation callback, so every sample set
is produced (and described) the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ditlab.encoders.base import LatentEncoder
from ditlab.errors import DitlabError
from ditlab.images import to_uint8  # noqa: F401  (the pixel rule; also importable from here)
from ditlab.objectives.base import Objective
from ditlab.progress import bar as progress_bar
from ditlab.samplers.base import Sampler
from ditlab.samplers.guidance import GuidedModel


def class_balanced_labels(num_classes: int, num_samples: int) -> torch.Tensor:
    """``num_samples`` labels cycling through the classes in blocks: 0,0,..,1,1,.. (one grid row per class)."""
    if num_classes <= 0:
        return torch.zeros(num_samples, dtype=torch.long)
    per_class = -(-num_samples // num_classes)
    return torch.arange(num_classes).repeat_interleave(per_class)[:num_samples]


@dataclass
class SampleRecipe:
    """Everything that determines a sample set; logged next to every metric computed from it."""

    sampler: dict[str, Any]
    guidance: dict[str, Any]  # the guidance config handed to generate(): scale, channels, interval
    encoder: dict[str, Any]
    num_samples: int
    seed: int
    nfe: int = 0
    weights: str = "ema"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.sampler,
            "cfg_scale": float(self.guidance.get("scale", 1.0)),
            "cfg_channels": self.guidance.get("channels", "all"),
            "cfg_interval": list(self.guidance["interval"]) if self.guidance.get("interval") else None,
            "nfe": self.nfe,
            "encoder": self.encoder,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "weights": self.weights,
            **self.extra,
        }


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    objective: Objective,
    sampler: Sampler,
    encoder: LatentEncoder,
    labels: torch.Tensor,
    latent_shape: tuple[int, int],
    guidance: dict[str, Any],
    batch_size: int,
    seed: int,
    num_classes: int,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield ``(uint8 images NHWC, labels, nfe per sample)`` batch by batch; never holds all samples.

    ``progress``: a bar with this description counts the samples (with an ETA); None: no bar."""
    sampler.check(objective)
    scale = float(guidance.get("scale", 1.0))
    if scale != 1.0 and (num_classes == 0 or model.y_embedder.dropout_prob <= 0):
        raise DitlabError(
            "classifier-free guidance needs a class-conditional model trained with label dropout "
            "(model.class_dropout_prob > 0); set guidance.scale=1"
        )
    was_training = model.training
    model.eval()
    channels, side = latent_shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    bar = progress_bar(total=len(labels), desc=progress, unit="img") if progress else None
    try:
        for start in range(0, len(labels), batch_size):
            y = labels[start : start + batch_size].to(device)
            guided = GuidedModel(
                model,
                pred_channels=channels,
                null_label=max(num_classes, 0),
                scale=scale,
                channels=guidance.get("channels", "all"),
                interval=guidance.get("interval"),
            )
            x_T = torch.randn((len(y), channels, side, side), generator=generator).to(device)
            z = sampler.sample(guided, objective, x_T, y, _device_generator(generator, device))
            images = encoder.decode(z)
            if not torch.isfinite(images).all():
                raise DitlabError(
                    f"sampling produced NaN/Inf values in the batch starting at sample {start}; nothing was "
                    "written for it. Check the checkpoint (train loss finite?) or lower guidance.scale"
                )
            yield to_uint8(images.float()), y.cpu().numpy(), guided.nfe
            if bar is not None:
                bar.update(len(y))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()


def _device_generator(cpu_generator: torch.Generator, device) -> torch.Generator:
    if torch.device(device).type == "cpu":
        return cpu_generator
    seed = int(torch.randint(0, 2**62, (1,), generator=cpu_generator))
    return torch.Generator(device=device).manual_seed(seed)
