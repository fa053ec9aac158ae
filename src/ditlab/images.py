"""The one rule that turns model-space images into pixels.

DiT's sample scripts write ``clamp(127.5 x + 128, 0, 255)`` then truncate to uint8; generated
samples (:mod:`ditlab.samplers.generate`) and real images on their way into a metric
(:mod:`ditlab.metrics.images`) both go through :func:`to_uint8`, so a metric never sees a
difference that is only quantisation.
"""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8 with DiT's rule clamp(127.5 x + 128) then truncate."""
    return (127.5 * x + 128.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
