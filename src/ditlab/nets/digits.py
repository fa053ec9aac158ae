"""The small CNN ditlab trains once on the bundled digits, cached per resolution.

Two parts use it: the digits metrics (:mod:`ditlab.metrics.digits_classifier`, ``fd_digits``,
``digits_accuracy``) and the ``digits`` target of the REPA auxiliary loss
(:mod:`ditlab.auxloss.targets`). It lives here, beside both and below neither, so that neither
imports the other. The real images go through the same uint8 round trip as generated samples, so the
classifier never sees a distribution difference that is only quantisation.

The trained weights are cached per resolution under ``cache_dir`` and reloaded with
``weights_only=True``; training is seeded, so a cache miss reproduces the same network.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditlab import progress
from ditlab.atomic import write_once
from ditlab.data.digits import load_digits_tensors
from ditlab.images import to_uint8
from ditlab.inputs import load_weights

CACHE_VERSION = 1
NUM_CLASSES = 10  # the digits 0-9
log = logging.getLogger("ditlab")


class DigitsClassifier(nn.Module):
    """(N, 1, R, R) in [-1, 1] -> 10 logits (``NUM_CLASSES``); ``features`` gives the 64-d penultimate activations."""

    num_features = 64

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, self.num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def uint8_to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 1) uint8 -> (N, 1, H, W) float in [-1, 1] (inverse of the sample conversion)."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 127.5


def _real_digits_uint8(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits_tensors(resolution)
    return to_uint8(x), y.numpy()


def train_digits_classifier(resolution: int, seed: int = 0, epochs: int = 40) -> tuple[DigitsClassifier, float]:
    """Train on 80% of the real digits; return the network and its accuracy on the held-out 20%."""
    images, labels = _real_digits_uint8(resolution)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_train = int(0.8 * len(labels))
    train_idx, test_idx = order[:n_train], order[n_train:]
    x = uint8_to_input(images)
    y = torch.from_numpy(labels).long()
    torch.manual_seed(seed)
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in progress.track(range(epochs), total=epochs, desc="digits classifier (once per cache)", unit="epoch"):
        perm = torch.from_numpy(train_idx)[torch.randperm(n_train, generator=gen)]
        for start in range(0, n_train, 64):
            idx = perm[start : start + 64]
            xb = x[idx]
            # Light augmentation: 1-pixel shifts and pixel noise make the check robust to small
            # generation artefacts without letting it accept wrong digits.
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3)) + 0.1 * torch.randn(xb.shape, generator=gen)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
    return net, acc


def load_digits_classifier(resolution: int, cache_dir: str | Path) -> tuple[DigitsClassifier, float]:
    """The cached classifier for ``resolution`` (trained and cached on first use)."""
    path = Path(cache_dir) / f"digits_classifier_r{resolution}_v{CACHE_VERSION}.pt"
    net = DigitsClassifier()
    if path.exists():
        state = load_weights(path, "delete it; the classifier is retrained and cached again")
        net.load_state_dict(state["model"])
        return net.eval(), float(state["heldout_accuracy"])
    # Seconds when the machine is quiet, minutes when it is loaded: say so, and say where it is kept.
    log.info("training the digits classifier for %dx%d digits once; cached as %s", resolution, resolution, path)
    t0 = time.time()
    net, acc = train_digits_classifier(resolution)
    log.info("digits classifier trained in %.1f s (held-out accuracy %.3f)", time.time() - t0, acc)
    # Atomic and never replaced: concurrent runs (parallel sweep jobs) never read a half-written
    # file; training is seeded, so whichever process wrote it, the network is the same.
    state = {"model": net.state_dict(), "heldout_accuracy": acc, "resolution": resolution}
    write_once(path, lambda tmp: torch.save(state, tmp))
    return net, acc
