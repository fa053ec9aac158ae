"""Classifier-free guidance as a wrapper around the network, and the NFE counter every sampler reports.

``channels: all`` guides every predicted channel (ε, velocity, ...); ``first3`` is the official
DiT/SiT/LightningDiT behaviour that guides only output channels 0-2 (DiT's ``models.py``
``forward_with_cfg``; the DiT maintainer's note in DiT pull request #12) and
exists to reproduce their published numbers. ``interval: [lo, hi]`` applies guidance only while
the noise level (0 = data, 1 = pure noise) lies in [lo, hi]; outside it one conditional pass is run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ditlab.errors import DitlabError

CHANNEL_MODES = ("all", "first3")


class GuidedModel:
    """``fn(x, t, y, noise_level) -> output`` with CFG; counts network evaluations per sample."""

    def __init__(
        self,
        model: nn.Module,
        pred_channels: int,
        null_label: int,
        scale: float = 1.0,
        channels: str = "all",
        interval: tuple[float, float] | list[float] | None = None,
        model_forward: Callable[..., torch.Tensor] | None = None,
    ):
        if channels not in CHANNEL_MODES:
            raise DitlabError(f"unknown guidance.channels '{channels}'; use one of {CHANNEL_MODES}")
        if interval is not None and (len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1):
            raise DitlabError(f"guidance.interval must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(interval)}")
        self.model = model
        self.forward = model_forward or model
        self.pred_channels = pred_channels
        self.null_label = null_label
        self.scale = float(scale)
        self.channels = channels
        self.interval = tuple(interval) if interval is not None else None
        self.nfe = 0  # network evaluations per sample, CFG doubling included

    @property
    def guided(self) -> bool:
        return self.scale != 1.0

    def active(self, noise_level: float) -> bool:
        if not self.guided:
            return False
        return self.interval is None or self.interval[0] <= noise_level <= self.interval[1]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, noise_level: float) -> torch.Tensor:
        if not self.active(noise_level):
            self.nfe += 1
            return self.forward(x, t, y)
        self.nfe += 2
        null = torch.full_like(y, self.null_label)
        out = self.forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        k = self.pred_channels if self.channels == "all" else 3
        guided = uncond[:, :k] + self.scale * (cond[:, :k] - uncond[:, :k])
        # Channels past k (variance, or the unguided legacy channels) keep the conditional value.
        return torch.cat([guided, cond[:, k:]], dim=1)
