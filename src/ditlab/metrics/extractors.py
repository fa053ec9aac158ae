"""Feature extractors behind the metrics: Inception (``fid``, ``kid``, ``is``) and the digits
classifier (``fd_digits``, ``kd_digits``, ``digits_accuracy``).

Every extractor takes uint8 ``(N, C, H, W)`` images (see :mod:`ditlab.metrics.images`) and is
handed to torchmetrics as its ``feature=`` module, so the Fréchet / kernel / score code is the
same whichever network produced the features. A metric is named after its extractor: ``fid``
only ever means Inception-v3 features.
"""

from __future__ import annotations

import hashlib
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.metrics.digits_classifier import CACHE_VERSION, DigitsFeatureExtractor, load_digits_classifier

# torch-fidelity's port of the TF Inception-v3 used by every published FID.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_KEY = "eval.feature_extractor_weights_path"


@dataclass
class Extractor:
    name: str                       # "inception" | "digits"
    features: nn.Module             # uint8 (N, C, H, W) -> (N, num_features)
    num_features: int
    rgb: bool                       # wants 3 channels (grey images are repeated)
    logits: Callable[[], nn.Module]  # built on demand: uint8 images -> class logits (IS, accuracy)
    identity: dict[str, Any] = field(default_factory=dict)  # part of the real-statistics cache key


class _Select(nn.Module):
    """One named output of a torchmetrics ``NoTrainInceptionV3`` (which can only return its first)."""

    def __init__(self, net: nn.Module, index: int, num_features: int):
        super().__init__()
        self.net = net
        self.index = index
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._torch_fidelity_forward(x)[self.index].reshape(len(x), -1)


def inception_extractor(weights_path: str | None, antialias: bool) -> Extractor:
    """torch-fidelity's Inception-v3 via torchmetrics: pool features (2048) and unbiased logits."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ModuleNotFoundError as e:  # torch-fidelity missing
        raise DitlabError(f"fid/kid/is need torch-fidelity ({e}); pip install torch-fidelity") from None
    path = None
    if weights_path:
        path = Path(str(weights_path)).expanduser()
        if not path.is_file():
            raise DitlabError(f"{WEIGHTS_KEY}={weights_path} does not exist; point it at {INCEPTION_WEIGHTS_FILE}")
        try:  # torch-fidelity loads with weights_only=False; only a plain tensor file gets that far
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DitlabError(f"{WEIGHTS_KEY}={weights_path} is not a plain Inception state dict ({type(e).__name__})") from None
    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(path) if path else None,
            antialias=antialias,
        )
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        raise DitlabError(
            f"the Inception weights for fid/kid/is could not be downloaded ({type(e).__name__}), so set "
            f"{WEIGHTS_KEY} to a local copy of {INCEPTION_WEIGHTS_FILE}"
        ) from None
    except RuntimeError as e:  # wrong keys / shapes in a local file
        raise DitlabError(f"{WEIGHTS_KEY}={weights_path} does not hold Inception-v3 weights: {str(e)[:120]}") from None
    identity = {
        "name": "inception-v3-compat",
        "weights": _file_digest(path) if path else INCEPTION_WEIGHTS_FILE,
        "antialias": bool(antialias),
    }
    return Extractor(
        name="inception",
        features=_Select(net, 0, 2048),
        num_features=2048,
        rgb=True,
        logits=lambda: _Select(net, 1, 1008),
        identity=identity,
    )


def digits_extractor(resolution: int, cache_dir: str | Path) -> Extractor:
    """The small CNN trained once on the real digits (cached per resolution): 64-d features, 10 logits."""
    net, heldout = load_digits_classifier(int(resolution), cache_dir)
    features = DigitsFeatureExtractor(net)
    return Extractor(
        name="digits",
        features=features,
        num_features=features.num_features,
        rgb=False,
        logits=lambda: DigitsFeatureExtractor(net, logits=True),
        identity={"name": "digits_classifier", "version": CACHE_VERSION, "resolution": int(resolution),
                  "heldout_accuracy": round(heldout, 6)},
    )


def build_extractor(name: str, *, data: Any, eval_cfg: Any, cache_dir: str | Path) -> Extractor:
    if name == "inception":
        return inception_extractor(eval_cfg.feature_extractor_weights_path, bool(eval_cfg.antialias))
    if name == "digits":
        if getattr(data, "name", None) != "digits" or getattr(data, "channels", None) != 1:
            raise DitlabError(
                f"the digits metrics (fd_digits, kd_digits, digits_accuracy) need data=digits, not data="
                f"{getattr(data, 'name', '?')}; choose eval=inception (fid) or eval=none"
            )
        return digits_extractor(data.resolution, cache_dir)
    raise DitlabError(f"unknown feature extractor '{name}'")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"
