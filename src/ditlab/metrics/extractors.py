"""Feature extractors behind the metrics, a registry: Inception (``fid``, ``sfid``, ``kid``, ``is``,
``precision``, ``recall``) and the digits classifier (``fd_digits``, ``kd_digits``, ``digits_accuracy``).

Every extractor takes uint8 ``(N, C, H, W)`` images (see :mod:`ditlab.metrics.images`) and returns
all its named outputs from one forward pass, so each sample set goes through each network once
whatever metrics use it. A metric is named after its extractor: ``fid`` only ever means Inception-v3.
"""

from __future__ import annotations

import hashlib
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.nets.digits import CACHE_VERSION, NUM_CLASSES, load_digits_classifier
from ditlab.registry import Registry

# torch-fidelity's port of the TF Inception-v3 used by every published FID.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_KEY = "eval.feature_extractor_weights_path"


@dataclass
class Extractor:
    """A network that maps uint8 ``(N, C, H, W)`` images to named feature sets in one pass."""

    name: str  # its registry name, e.g. "inception"
    net: nn.Module  # uint8 images -> {output name: (N, width) float tensor}
    outputs: dict[str, int]  # output name -> width, e.g. {"pool": 2048, "spatial": 2023, "logits": 1008}
    rgb: bool  # wants 3 channels (grey images are repeated)
    identity: dict[str, Any] = field(default_factory=dict)  # part of the real-statistics cache key


# name -> builder(data, eval_cfg, cache_dir) -> Extractor. A user adds one with
# ``@EXTRACTORS.register("mine")`` in their module and names that module in ``eval.modules``.
EXTRACTORS: Registry[Callable[..., Extractor]] = Registry("feature extractor", "eval.modules")


class _InceptionOutputs(nn.Module):
    """torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port of the TF graph) run once for
    the pool features, the unbiased logits and the sFID spatial features.

    sFID (Nash et al., 2021, as the ADM evaluator computes it) uses the TF tensor ``mixed_6/conv``:
    the 1×1 branch of the seventh mixed block, ``Mixed_6d.branch1x1`` here (192 × 17 × 17 after
    BatchNorm + ReLU), first 7 channels, flattened in TF's height-width-channel order (2,023 values),
    so ditlab's ``mu_s``/``sigma_s`` line up with those in ADM reference batches."""

    SPATIAL_CHANNELS = 7

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self._spatial: torch.Tensor | None = None
        net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._spatial = output[:, : self.SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(output), -1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pool, logits = self.net._torch_fidelity_forward(x)
        spatial, self._spatial = self._spatial, None
        return {"pool": pool.reshape(len(x), -1).float(), "spatial": spatial.float(), "logits": logits.float()}


def inception_extractor(weights_path: str | None, antialias: bool) -> Extractor:
    """torch-fidelity's Inception-v3 via torchmetrics: pool (2048), spatial (2023), logits (1008)."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3  # only when the Inception weights are used
    except ModuleNotFoundError as e:  # torch-fidelity missing
        raise DitlabError(
            f"fid/sfid/kid/is/precision/recall need torch-fidelity ({e}); pip install torch-fidelity"
        ) from None
    path = None
    if weights_path:
        path = Path(str(weights_path)).expanduser()
        if not path.is_file():
            raise DitlabError(f"{WEIGHTS_KEY}={weights_path} does not exist; point it at {INCEPTION_WEIGHTS_FILE}")
        try:  # torch-fidelity loads with weights_only=False; only a plain tensor file gets that far
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DitlabError(
                f"{WEIGHTS_KEY}={weights_path} is not a plain Inception state dict ({type(e).__name__})"
            ) from None
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
    outputs = {"pool": 2048, "spatial": 17 * 17 * _InceptionOutputs.SPATIAL_CHANNELS, "logits": 1008}
    return Extractor(name="inception", net=_InceptionOutputs(net), outputs=outputs, rgb=True, identity=identity)


class _DigitsOutputs(nn.Module):
    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pool = self.classifier.features((x.float() - 127.5) / 127.5)
        return {"pool": pool, "logits": self.classifier.head(pool)}


def digits_extractor(resolution: int, cache_dir: str | Path) -> Extractor:
    """The small CNN trained once on the real digits (cached per resolution): 64-d features, 10 logits."""
    net, heldout = load_digits_classifier(int(resolution), cache_dir)
    return Extractor(
        name="digits",
        net=_DigitsOutputs(net),
        outputs={"pool": net.num_features, "logits": NUM_CLASSES},
        rgb=False,
        identity={
            "name": "digits_classifier",
            "version": CACHE_VERSION,
            "resolution": int(resolution),
            "heldout_accuracy": round(heldout, 6),
        },
    )


@EXTRACTORS.register("inception")
def _build_inception(data: Any, eval_cfg: Any, cache_dir: str | Path) -> Extractor:
    return inception_extractor(eval_cfg.feature_extractor_weights_path, bool(eval_cfg.antialias))


@EXTRACTORS.register("digits")
def _build_digits(data: Any, eval_cfg: Any, cache_dir: str | Path) -> Extractor:
    if getattr(data, "name", None) != "digits" or getattr(data, "channels", None) != 1:
        raise DitlabError(
            f"the digits metrics (fd_digits, kd_digits, digits_accuracy) need data=digits, not data="
            f"{getattr(data, 'name', '?')}; choose eval=inception (fid) or eval=none"
        )
    return digits_extractor(data.resolution, cache_dir)


def build_extractor(name: str, *, data: Any, eval_cfg: Any, cache_dir: str | Path) -> Extractor:
    return EXTRACTORS.build(name, data=data, eval_cfg=eval_cfg, cache_dir=cache_dir)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"
