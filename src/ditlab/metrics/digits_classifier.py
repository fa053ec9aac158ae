"""A small CNN trained once on the real digits: the quality check for the bundled dataset.

It answers "is this sample the digit that was asked for?" (``accuracy``) and provides the
feature space for a Fréchet distance on digits (Inception features mean nothing on 8x8 digits).
The real images go through the same uint8 round trip as generated samples, so the classifier
never sees a distribution difference that is only quantisation.

The trained weights are cached per resolution under ``cache_dir`` and reloaded with
``weights_only=True``; training is seeded, so a cache miss reproduces the same network.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditlab import progress
from ditlab.atomic import write_once
from ditlab.data.digits import load_digits_tensors
from ditlab.errors import DitlabError, one_line_errors
from ditlab.images import to_uint8
from ditlab.inputs import check_writable, load_weights, read_sample_set
from ditlab.user_cache import default_cache_dir

CACHE_VERSION = 1
NUM_CLASSES = 10
log = logging.getLogger("ditlab")


class DigitsClassifier(nn.Module):
    """(N, 1, R, R) in [-1, 1] -> 10 logits; ``features`` gives the 64-d penultimate activations."""

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
        self.head = nn.Linear(self.num_features, 10)

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


def classify_samples(images: np.ndarray, labels: np.ndarray, cache_dir: str | Path) -> dict[str, Any]:
    """Fraction of samples the classifier assigns to their requested class (overall and per class)."""
    if images.ndim != 4 or images.shape[-1] != 1 or images.shape[1] != images.shape[2]:
        raise DitlabError(f"expected digit samples of shape (N, R, R, 1), got {tuple(images.shape)}")
    net, heldout = load_digits_classifier(images.shape[1], cache_dir)
    with torch.no_grad():
        pred = torch.cat([net(uint8_to_input(images[i : i + 500])).argmax(1) for i in range(0, len(images), 500)])
    correct = (pred.numpy() == labels).astype(np.float64)
    per_class = {int(c): float(correct[labels == c].mean()) for c in np.unique(labels)}
    return {
        "digits_accuracy": float(correct.mean()),
        "per_class": per_class,
        "num_samples": int(len(labels)),
        "classifier_heldout_accuracy": heldout,
        "resolution": int(images.shape[1]),
    }


def classify_npz(path: str | Path, cache_dir: str | Path) -> dict[str, Any]:
    images, labels = read_labelled_samples(path)
    return classify_samples(images, labels, cache_dir)


def read_labelled_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``arr_0`` uint8 (N, R, R, 1) images and ``arr_1`` (N,) labels in [0, 10) of a samples .npz, checked."""
    images, labels, _ = read_sample_set(path, labels_required=True, num_classes=NUM_CLASSES, channels=(1,))
    return images, labels


class DigitsFeatureExtractor(nn.Module):
    """torchmetrics-compatible feature extractor: (N, 1, R, R) uint8 -> (N, 64) classifier features,
    or with ``logits=True`` the (N, 10) class logits."""

    def __init__(self, classifier: DigitsClassifier, logits: bool = False):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.logits = logits
        self.num_features = 10 if logits else classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - 127.5) / 127.5
        return self.classifier(x) if self.logits else self.classifier.features(x)


def digits_frechet_distance(fake: np.ndarray, real: np.ndarray, cache_dir: str | Path) -> float:
    """Fréchet distance between two uint8 (N, R, R, 1) digit sets in the classifier's feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    net, _ = load_digits_classifier(fake.shape[1], cache_dir)
    metric = FrechetInceptionDistance(feature=DigitsFeatureExtractor(net), normalize=False)
    for images, real_flag in ((real, True), (fake, False)):
        for i in range(0, len(images), 500):
            metric.update(
                torch.from_numpy(np.ascontiguousarray(images[i : i + 500])).permute(0, 3, 1, 2), real=real_flag
            )
    return float(metric.compute())


def main(argv: list[str] | None = None) -> None:
    import argparse

    from ditlab.key_value_args import parse_key_values  # with argparse: the command line only

    parser = argparse.ArgumentParser(
        prog="ditlab-classify",
        description="Fraction of generated digits that a CNN trained on the real digits assigns to the requested class.",
    )
    parser.add_argument("samples", help="a run directory (uses its samples.npz) or an .npz with arr_0/arr_1")
    parser.add_argument(
        "--cache-dir",
        default=default_cache_dir(),
        help="default: $DITLAB_CACHE, $XDG_CACHE_HOME/ditlab or ~/.cache/ditlab",
    )
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parse_key_values(parser, argv, {"samples": "samples"})  # samples=X cache_dir=Y (or the old X --cache-dir Y)
    with one_line_errors():
        check_writable(args.out, "--out")  # before the classifier runs (or is trained and cached)
        result = classify_npz(args.samples, args.cache_dir)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
