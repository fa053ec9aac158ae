"""The digits metrics: a small CNN trained once on the real digits (:mod:`ditlab.nets.digits`) as the
quality check for the bundled dataset.

It answers "is this sample the digit that was asked for?" (``accuracy``) and provides the
feature space for a Fréchet distance on digits (Inception features mean nothing on 8x8 digits).
The real images go through the same uint8 round trip as generated samples, so the classifier
never sees a distribution difference that is only quantisation.

The trained weights are cached per resolution under ``cache_dir`` and reloaded with
``weights_only=True``; training is seeded, so a cache miss reproduces the same network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ditlab.errors import DitlabError, one_line_errors
from ditlab.inputs import check_new_file, check_writable, read_sample_set
from ditlab.nets.digits import (
    CACHE_VERSION,  # noqa: F401 -- still read here by callers of ditlab-classify's module
    NUM_CLASSES,
    DigitsClassifier,
    load_digits_classifier,
    uint8_to_input,
)
from ditlab.user_cache import default_cache_dir


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
        self.num_features = NUM_CLASSES if logits else classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - 127.5) / 127.5
        return self.classifier(x) if self.logits else self.classifier.features(x)


def digits_frechet_distance(fake: np.ndarray, real: np.ndarray, cache_dir: str | Path) -> float:
    """Fréchet distance between two uint8 (N, R, R, 1) digit sets in the classifier's feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # only the digits Fréchet distance needs it

    net, _ = load_digits_classifier(fake.shape[1], cache_dir)
    metric = FrechetInceptionDistance(feature=DigitsFeatureExtractor(net), normalize=False)
    for images, real_flag in ((real, True), (fake, False)):
        for i in range(0, len(images), 500):
            metric.update(
                torch.from_numpy(np.ascontiguousarray(images[i : i + 500])).permute(0, 3, 1, 2), real=real_flag
            )
    return float(metric.compute())


def main(argv: list[str] | None = None) -> None:
    import argparse  # the command line only

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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parse_key_values(parser, argv, {"samples": "samples"})  # samples=X cache_dir=Y (or the old X --cache-dir Y)
    with one_line_errors():
        check_writable(args.out, "--out", file=True)  # before the classifier runs (or is trained and cached)
        check_new_file(args.out, "--out", args.overwrite)
        result = classify_npz(args.samples, args.cache_dir)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
