"""What each metric is: which extractor output it reads, what it accumulates over the generated
samples (float64 moments or the feature vectors), what it needs of the reference set, and how the
value is computed. A registry, so a metric is added without editing ditlab:

    # my_metrics.py (named in eval.modules)
    from ditlab.metrics.definitions import METRICS, MetricSpec
    METRICS.register("pool_norm")(MetricSpec(
        "custom", "inception", "pool", fake="features", real=None, lower_is_better=False,
        compute=lambda fake, real, opts: float(fake.features.norm(dim=1).mean())))

``compute(fake, real, opts)`` gets ``fake`` as :class:`~ditlab.metrics.frechet.Moments` or
:class:`FakeFeatures` (in sample order, whatever the number of processes), ``real`` as Moments,
a feature tensor or None, and the ``eval`` options; it returns a value or (value, std).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ditlab.errors import DitlabError
from ditlab.metrics.frechet import Moments, frechet_between
from ditlab.metrics.manifold import inception_score, precision_recall
from ditlab.registry import Registry


class FakeFeatures(NamedTuple):
    features: torch.Tensor  # (N, d) float32, in sample order
    labels: torch.Tensor  # (N,) the labels the samples were drawn for


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # frechet | kernel | score | accuracy | manifold | anything a plugin names
    extractor: str  # a name in EXTRACTORS
    output: str  # one of that extractor's outputs
    fake: str  # "moments" | "features": what is accumulated over the generated samples
    real: str | None  # None | "moments" | "features": what the reference set must provide
    lower_is_better: bool
    compute: Callable[[Any, Any, dict[str, Any]], float | tuple[float, float]]


METRICS: Registry[MetricSpec] = Registry("metric", "eval.modules")


def _frechet(fake: Moments, real: Moments, opts: dict[str, Any]) -> float:
    return frechet_between(fake, real)


def _kernel(fake: FakeFeatures, real: torch.Tensor, opts: dict[str, Any]) -> tuple[float, float]:
    """KID: unbiased polynomial-kernel MMD² over random subsets (torchmetrics' estimator), seeded."""
    from torchmetrics.image.kid import poly_mmd

    m = int(opts.get("kid_subset_size", 1000))
    if m > min(len(real), len(fake.features)):
        raise DitlabError(
            f"eval.kid_subset_size={m} exceeds the {min(len(real), len(fake.features))} samples "
            "available to kid; lower it"
        )
    g = torch.Generator().manual_seed(int(opts.get("seed", 0)))
    values = []
    for _ in range(int(opts.get("kid_subsets", 100))):
        i, j = torch.randperm(len(real), generator=g)[:m], torch.randperm(len(fake.features), generator=g)[:m]
        values.append(poly_mmd(real[i.to(real.device)].double(), fake.features[j.to(real.device)].double()))
    v = torch.stack(values)
    return float(v.mean()), float(v.std(unbiased=False))


def _score(fake: FakeFeatures, real: None, opts: dict[str, Any]) -> tuple[float, float]:
    return inception_score(fake.features, int(opts.get("is_split_size", 5000)))


def _accuracy(fake: FakeFeatures, real: None, opts: dict[str, Any]) -> float:
    return float((fake.features.argmax(1) == fake.labels.to(fake.features.device)).double().mean())


def _manifold(which: int) -> Callable[..., float]:
    def compute(fake: FakeFeatures, real: torch.Tensor, opts: dict[str, Any]) -> float:
        cache = opts.setdefault("_cache", {})  # precision and recall share one k-NN pass
        key = ("pr", id(fake.features), id(real))
        if key not in cache:
            cache[key] = precision_recall(real, fake.features, int(opts.get("pr_k", 3)))
        return cache[key][which]

    return compute


for _name, _spec in {
    "fid": MetricSpec("frechet", "inception", "pool", "moments", "moments", True, _frechet),
    "sfid": MetricSpec("frechet", "inception", "spatial", "moments", "moments", True, _frechet),
    "kid": MetricSpec("kernel", "inception", "pool", "features", "features", True, _kernel),
    "is": MetricSpec("score", "inception", "logits", "features", None, False, _score),
    "precision": MetricSpec("manifold", "inception", "pool", "features", "features", False, _manifold(0)),
    "recall": MetricSpec("manifold", "inception", "pool", "features", "features", False, _manifold(1)),
    "fd_digits": MetricSpec("frechet", "digits", "pool", "moments", "moments", True, _frechet),
    "kd_digits": MetricSpec("kernel", "digits", "pool", "features", "features", True, _kernel),
    "digits_accuracy": MetricSpec("accuracy", "digits", "logits", "features", None, False, _accuracy),
}.items():
    METRICS.register(_name)(_spec)


def check_metric_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise DitlabError(
            f"unknown metric(s) {unknown or names} in eval.metrics; choose from {', '.join(METRICS.names())}, "
            "or register your own and name its module in eval.modules"
        )
    return list(names)
