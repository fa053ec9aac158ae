"""The 8x8 handwritten digits (1,797 images, 10 classes), bundled with the package.

``digits.csv.gz`` is the file scikit-learn ships as ``load_digits()`` (one row per image: 64 pixel
counts in 0..16, then the label): the test set of the UCI "Optical Recognition of Handwritten
Digits" data set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0). Shipping it keeps scikit-learn out of
the install. Images are resized to ``resolution`` (bilinear) and scaled from [0, 16] to [-1, 1].
No flips: digits are not mirror-symmetric.
"""

from __future__ import annotations

import gzip
from importlib.resources import files

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ditlab.data.base import DATASETS, ImageDataModule
from ditlab.data.sharding import sharded_train_loader
from ditlab.resumable_loader import ResumableLoader


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled file as (images (1797, 8, 8) float64 in 0..16, labels (1797,) int64), like sklearn's."""
    with gzip.open(files("ditlab.data").joinpath("digits.csv.gz").open("rb"), "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits_tensors(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ((N, 1, R, R) float32 in [-1, 1], (N,) int64 labels)."""
    images, labels = load_digits_arrays()
    x = torch.from_numpy(images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 2 - 1).contiguous()
    y = torch.from_numpy(labels).long()
    return x, y


@DATASETS.register("digits")
class DigitsDataModule(ImageDataModule):
    name = "digits"
    num_classes = 10
    channels = 1

    def __init__(self, resolution: int = 16, batch_size: int = 128, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, num_workers)
        self.resolution = resolution
        self.seed = int(seed)
        self.dataset: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = TensorDataset(*load_digits_tensors(self.resolution))

    def train_dataloader(self) -> ResumableLoader:
        self.setup()
        return sharded_train_loader(self.dataset, self, self.seed)

    def real_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.setup()
        return self.dataset.tensors
