"""Frozen target encoders for representation alignment (REPA), named by ``aux.encoder``.

* ``dinov2_vitb14`` (any ``dinov2_*`` name): ``torch.hub.load("facebookresearch/dinov2", name)``, the
  REPA default (Yu et al. 2025, github.com/sihyun-yu/REPA ``utils.py``); targets are its final-normed
  patch tokens ``forward_features(x)["x_norm_patchtokens"]``; inputs ImageNet-normalised, resized to 224.
* ``timm:<model>``: ``timm.create_model(<model>, pretrained=True, num_classes=0)``; targets are
  ``forward_features(x)`` without the prefix (class/register) tokens.
* ``digits``: the CNN ditlab trains once on the bundled digits (:mod:`ditlab.nets.digits`);
  targets are its last convolutional feature map (64 channels at half the image side), runs offline.
* ``python:<module>:<factory>``: any frozen ``nn.Module`` a function returns (called with no arguments).

An encoder's output may be tokens (N, L, F), a feature map (N, F, h, w) or one vector (N, F);
:func:`to_grid_tokens` turns it into (N, G², F) targets on the DiT's G×G token grid.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ditlab.errors import DitlabError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenTarget:
    """images in [-1, 1] (N, C, R, R) -> target features; eval mode, no gradients, never trained.

    ``preprocess``: ``imagenet`` maps [-1, 1] to [0, 1], then ImageNet mean/std (REPA's order:
    normalise, then resize); ``resolution``: bicubic resize to this side (None: as given);
    grey images are repeated to the ``channels`` the encoder takes.
    """

    def __init__(
        self,
        module: nn.Module,
        extract: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        name: str,
        resolution: int | None,
        preprocess: str,
        channels: int | None,
    ):
        if preprocess not in ("imagenet", "none"):
            raise DitlabError(
                f"unknown encoder preprocessing '{preprocess}'; set aux.encoder_preprocess to imagenet or none"
            )
        self.module = module.eval().requires_grad_(False)
        self.extract, self.name = extract, name
        self.resolution, self.preprocess, self.channels = resolution, preprocess, channels

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.channels and x.shape[1] == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        if self.preprocess == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            x = ((x + 1) / 2 - mean) / std
        if self.resolution and x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.module.to(images.device).eval()
        return self.extract(self.module, self.prepare(images))


def to_grid_tokens(features: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, L, F) tokens, (N, F, h, w) maps or (N, F) vectors -> (N, G² or 1, F) targets, row-major."""
    if features.dim() == 2:  # one vector per image: every token aligns with it
        return features.unsqueeze(1)
    if features.dim() == 3:
        n, length, dim = features.shape
        if length == grid * grid:
            return features
        side = int(round(length**0.5))
        if side * side != length:
            raise DitlabError(
                f"the REPA encoder gave {length} tokens, not a square grid; use an encoder with patch tokens"
            )
        features = features.transpose(1, 2).reshape(n, dim, side, side)
    if features.dim() != 4:
        raise DitlabError(
            f"the REPA encoder output has shape {tuple(features.shape)}; expected (N, L, F), (N, F, h, w) or (N, F)"
        )
    if features.shape[-1] >= grid:
        features = F.adaptive_avg_pool2d(features, grid)
    else:
        features = F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False)
    return features.flatten(2).transpose(1, 2)


def target_identity(spec: str, resolution: int | None, preprocess: str | None) -> dict[str, Any]:
    """What makes an encoder's targets what they are, with each encoder's defaults filled in (no
    weights are loaded): a latent cache records it beside stored features, and a run compares its own."""
    if spec.startswith("dinov2_"):
        default_resolution, default_preprocess = 224, "imagenet"
    elif spec.startswith("timm:"):
        default_resolution, default_preprocess = None, "imagenet"
    elif spec == "digits" or spec.startswith("python:"):
        default_resolution, default_preprocess = None, "none"
    else:
        raise DitlabError(
            f"unknown REPA encoder '{spec}'; set aux.encoder to dinov2_vitb14 (torch.hub), timm:<model>, digits, "
            "or python:<module>:<factory>"
        )
    return {
        "encoder": spec,
        "resolution": default_resolution if resolution is None else int(resolution),
        "preprocess": preprocess or default_preprocess,
    }


def build_target(
    spec: str, resolution: int | None, preprocess: str | None, cache_dir: str, data_resolution: int
) -> FrozenTarget:
    ident = target_identity(spec, resolution, preprocess)
    resolution, preprocess = ident["resolution"], ident["preprocess"]
    if spec.startswith("dinov2_"):
        module = _hub_dinov2(spec)
        return FrozenTarget(
            module, lambda m, x: m.forward_features(x)["x_norm_patchtokens"], spec, resolution, preprocess, 3
        )
    if spec.startswith("timm:"):
        module = _timm(spec[5:])
        prefix = int(getattr(module, "num_prefix_tokens", 0))
        return FrozenTarget(
            module, lambda m, x: _drop_prefix(m.forward_features(x), prefix), spec, resolution, preprocess, 3
        )
    if spec == "digits":
        from ditlab.nets.digits import load_digits_classifier  # only the digits target trains or loads it

        net, _ = load_digits_classifier(data_resolution, cache_dir)
        trunk = net.body[:6]  # conv stack up to the last ReLU before pooling: (N, 64, R/2, R/2)
        return FrozenTarget(trunk, lambda m, x: m(x), spec, resolution, preprocess, 1)
    module = _factory(spec[7:])()  # python:<module>:<factory> (target_identity refused anything else)
    if not isinstance(module, nn.Module):
        raise DitlabError(f"aux.encoder={spec} returned {type(module).__name__}, not a torch.nn.Module")
    return FrozenTarget(module, lambda m, x: m(x), spec, resolution, preprocess, None)


class CachedTarget:
    """Targets a latent cache stored (``ditlab-extract ... aux=repa``): batches already carry the encoder's
    output for the image or flip the sample uses, so nothing runs here and the encoder costs nothing."""

    def __init__(self, identity: dict[str, Any]):
        self.name = identity["encoder"]

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features.float()


def _drop_prefix(x: torch.Tensor, prefix: int) -> torch.Tensor:
    return x[:, prefix:] if x.dim() == 3 and prefix else x


def _hub_dinov2(name: str) -> nn.Module:
    try:
        return torch.hub.load("facebookresearch/dinov2", name)
    except Exception as e:  # no network, no cached hub repo, unknown name
        raise DitlabError(
            f"cannot load {name} from torch.hub (facebookresearch/dinov2): {str(e).splitlines()[0][:200]}; "
            "check the network or TORCH_HOME cache, or use aux.encoder=digits / python:<module>:<factory> offline"
        ) from None


def _timm(name: str) -> nn.Module:
    try:
        import timm  # optional: only timm: targets need it
    except ImportError:
        raise DitlabError("aux.encoder=timm:... needs the timm package (pip install timm)") from None
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:
        raise DitlabError(f"cannot create timm model '{name}': {str(e).splitlines()[0][:200]}") from None


def _factory(path: str) -> Callable[[], nn.Module]:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise DitlabError(f"aux.encoder=python:{path} must be python:<module>:<factory>")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise DitlabError(f"cannot import the REPA encoder factory python:{path}: {e}") from None
