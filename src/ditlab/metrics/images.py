"""The one place images change representation on their way into a metric.

Generated samples leave :func:`ditlab.samplers.generate.generate` as uint8 ``(N, H, W, C)``,
made from the model's [-1, 1] output with DiT's rule ``clamp(127.5 x + 128, 0, 255)`` then
truncation. Real images go through the *same* rule (:func:`real_to_uint8`), so a metric never sees
a difference that is only quantisation. torchmetrics' ``normalize=True`` would instead compute
``(x * 255).byte()`` on [0, 1] floats; ditlab never uses it and always hands metrics uint8.
"""

from __future__ import annotations

import numpy as np
import torch

from ditlab.images import to_uint8


def real_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float in [-1, 1] -> (N, H, W, C) uint8, exactly as samples are converted."""
    return to_uint8(images.float())


def to_metric_input(images: np.ndarray | torch.Tensor, rgb: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C', H, W) uint8 on ``device``; grey images are repeated to 3
    channels when the extractor wants RGB (Inception), and kept as they are otherwise."""
    x = torch.as_tensor(np.ascontiguousarray(images))
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"metric input must be uint8 (N, H, W, C), got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2)
    if rgb and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous().to(device)
