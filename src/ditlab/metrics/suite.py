"""A set of sample-quality metrics fed by shared feature extractors, correct under DDP.

Each extractor runs once per batch; the torchmetrics objects (``FrechetInceptionDistance``,
``KernelInceptionDistance``, ``InceptionScore``, ``MulticlassAccuracy``) receive the features
through a pass-through ``feature=`` module, so they only hold statistics. Under DDP every
process updates the metrics with its own shard of samples and every process calls
:meth:`MetricSuite.compute` (torchmetrics' sync is collective: calling it on one rank hangs).
The real statistics enter once: rank 0 holds the Fréchet sums, the real features of kernel
metrics are dealt across ranks, so the sums and concatenations over ranks count each image once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.metrics.extractors import Extractor
from ditlab.metrics.images import to_metric_input
from ditlab.metrics.real_stats import RealStats


@dataclass(frozen=True)
class MetricSpec:
    kind: str              # frechet | kernel | score | accuracy
    extractor: str         # inception | digits
    lower_is_better: bool


# The metric name says which feature space it lives in: ``fid`` is always Inception-v3.
METRICS: dict[str, MetricSpec] = {
    "fid": MetricSpec("frechet", "inception", True),
    "kid": MetricSpec("kernel", "inception", True),
    "is": MetricSpec("score", "inception", False),
    "fd_digits": MetricSpec("frechet", "digits", True),
    "kd_digits": MetricSpec("kernel", "digits", True),
    "digits_accuracy": MetricSpec("accuracy", "digits", False),
}


def check_metric_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise DitlabError(f"unknown metric(s) {unknown or names} in eval.metrics; choose from {', '.join(METRICS)}")
    return list(names)


class _Passthrough(nn.Module):
    """The ``feature=`` module of every torchmetrics object here: features arrive precomputed."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MetricSuite(nn.Module):
    def __init__(
        self,
        names: list[str],
        extractors: dict[str, Extractor],
        *,
        num_classes: int = 0,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        seed: int = 0,
        sync: bool = True,
    ):
        from torchmetrics.classification import MulticlassAccuracy
        from torchmetrics.image import FrechetInceptionDistance, InceptionScore, KernelInceptionDistance

        super().__init__()
        self.names = check_metric_names(names)
        self.specs = {n: METRICS[n] for n in self.names}
        self.extractors = extractors
        self.seed = seed
        kw = {"sync_on_compute": sync}
        metrics: dict[str, nn.Module] = {}
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")  # known, bounded here
        for name, spec in self.specs.items():
            d = extractors[spec.extractor].num_features
            if spec.kind == "frechet":
                metrics[name] = FrechetInceptionDistance(feature=_Passthrough(d), reset_real_features=False, **kw)
            elif spec.kind == "kernel":
                metrics[name] = KernelInceptionDistance(
                    feature=_Passthrough(d), subsets=kid_subsets, subset_size=kid_subset_size,
                    reset_real_features=False, **kw)
            elif spec.kind == "score":
                metrics[name] = InceptionScore(feature=_Passthrough(d), splits=is_splits, **kw)
            else:
                if num_classes <= 0:
                    raise DitlabError(f"{name} needs class-conditional data (num_classes > 0); drop it from eval.metrics")
                metrics[name] = MulticlassAccuracy(num_classes=num_classes, average="micro", **kw)
        self.metrics = nn.ModuleDict(metrics)
        self._logit_nets = nn.ModuleDict({
            ex: extractors[ex].logits() for ex in {s.extractor for s in self.specs.values() if s.kind in ("score", "accuracy")}
        })

    # ------------------------------------------------------------------ real side
    def needs_real(self) -> dict[str, bool]:
        """Extractors whose real statistics are needed -> whether the features themselves are."""
        out: dict[str, bool] = {}
        for spec in self.specs.values():
            if spec.kind in ("frechet", "kernel"):
                out[spec.extractor] = out.get(spec.extractor, False) or spec.kind == "kernel"
        return out

    def load_real(self, stats: dict[str, RealStats], rank: int = 0, world_size: int = 1) -> None:
        for name, spec in self.specs.items():
            m, s = self.metrics[name], stats.get(spec.extractor)
            if spec.kind == "frechet" and rank == 0:
                m.real_features_sum = s.feature_sum.to(m.real_features_sum)
                m.real_features_cov_sum = s.feature_cov_sum.to(m.real_features_cov_sum)
                m.real_features_num_samples = torch.tensor(s.count, device=m.device)
            elif spec.kind == "kernel":
                m.real_features = [s.features[rank::world_size].to(m.device)]

    # ------------------------------------------------------------------ fake side
    @torch.no_grad()
    def update(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
        """A batch of generated uint8 (N, H, W, C) samples and the labels they were asked for."""
        device = next(iter(self.metrics.values())).device
        inputs: dict[str, torch.Tensor] = {}  # per extractor: each network runs once per batch
        feats: dict[str, torch.Tensor] = {}
        logits: dict[str, torch.Tensor] = {}
        for name, spec in self.specs.items():
            ex = self.extractors[spec.extractor]
            if spec.extractor not in inputs:
                inputs[spec.extractor] = to_metric_input(images, ex.rgb, device)
            x = inputs[spec.extractor]
            m = self.metrics[name]
            if spec.kind in ("frechet", "kernel"):
                if spec.extractor not in feats:
                    feats[spec.extractor] = ex.features.to(device)(x).float()
                m.update(feats[spec.extractor], real=False)
                continue
            if spec.extractor not in logits:
                logits[spec.extractor] = self._logit_nets[spec.extractor].to(device)(x).float()
            if spec.kind == "score":
                m.update(logits[spec.extractor])
            else:
                m.update(logits[spec.extractor], torch.as_tensor(np.asarray(labels), device=device).long())

    def compute(self) -> dict[str, float]:
        """Every process must call this (it synchronises the metric states)."""
        out: dict[str, float] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # KID/IS subsets: the same on every rank, training RNG untouched
            for name, spec in self.specs.items():
                m = self.metrics[name]
                self._one_tensor_per_list_state(m, self.extractors[spec.extractor].num_features)
                value = m.compute()
                if isinstance(value, tuple):  # (mean, std) of KID / IS
                    out[name], out[f"{name}_std"] = float(value[0]), float(value[1])
                else:
                    out[name] = float(value)
        return out

    def reset(self) -> None:
        """Forget the generated samples; the real statistics stay."""
        for m in self.metrics.values():
            m.reset()

    @staticmethod
    def _one_tensor_per_list_state(metric: nn.Module, dim: int) -> None:
        # torchmetrics gathers list states element by element; ranks holding different numbers of
        # batches (or none) would wait on each other forever. One (possibly empty) tensor each.
        for attr in ("real_features", "fake_features", "features"):
            value = getattr(metric, attr, None)
            if isinstance(value, list):
                width = value[0].shape[-1] if value else dim
                cat = torch.cat(value) if value else torch.empty(0, width, device=metric.device)
                setattr(metric, attr, [cat])
