"""Image preprocessing shared by training and latent extraction (DiT's, via ADM).

``adm_center_crop`` is ADM's ``center_crop_arr`` (DiT's ``train.py``, from ADM's
``guided_diffusion/image_datasets.py``):
halve with BOX while the short side is at least twice the target, resize the short side to the
target with BICUBIC, then crop the centre square.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return Image.fromarray(arr[top : top + size, left : left + size])


def to_model_range(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    return x.float() / 127.5 - 1.0
