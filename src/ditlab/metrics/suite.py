"""A set of sample-quality metrics fed by one pass of each feature extractor, correct under DDP.

For every extractor a metric uses, each batch of generated images goes through the network once
and all its outputs are kept as the metrics need them: float64 sums of f and f fᵀ (Fréchet
distances, whatever the sample count) or the vectors themselves (KID, IS, precision/recall,
accuracy), with each sample's index so the set is in sample order after the processes are
gathered. The accumulators are torchmetrics ``Metric`` states: under DDP every process updates
with its own shard and every process calls :meth:`MetricSuite.compute` (the sync is collective:
calling it on one rank hangs). The reference side (:class:`RealSide`) is held whole by each process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torchmetrics import Metric

from ditlab.metrics.definitions import METRICS, FakeFeatures, MetricSpec, check_metric_names
from ditlab.metrics.extractors import Extractor
from ditlab.metrics.frechet import Moments
from ditlab.metrics.images import to_metric_input
from ditlab.registry import import_plugin

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricSuite",
    "RealSide",
    "check_metric_names",
    "import_eval_modules",
    "suite_options",
]


def import_eval_modules(ec: Any) -> None:
    """User metrics / extractors register themselves when their modules (``eval.modules``) are imported."""
    for module in ec.get("modules") or []:
        import_plugin(str(module), "eval.modules")


def suite_options(ec: Any) -> dict[str, Any]:
    return {
        k: ec.get(k)
        for k in ("kid_subsets", "kid_subset_size", "is_split_size", "pr_k", "seed")
        if ec.get(k) is not None
    }


@dataclass
class RealSide:
    """What the reference set provides for one extractor output."""

    moments: Moments | None = None
    features: torch.Tensor | None = None  # (N, d), for kernel / manifold metrics


class MomentState(Metric):
    full_state_update = False

    def __init__(self, dim: int, **kw: Any):
        super().__init__(**kw)
        self.add_state("total", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: torch.Tensor) -> None:
        f = features.double()
        self.total += f.sum(0)
        self.outer += f.T @ f
        self.count += len(f)

    def compute(self) -> Moments:
        return Moments.from_sums(self.total, self.outer, int(self.count))


class FeatureState(Metric):
    full_state_update = False

    def __init__(self, dim: int, **kw: Any):
        super().__init__(**kw)
        self.dim = dim
        for name in ("features", "labels", "index"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        self.features.append(features.float())
        self.labels.append(labels.long())
        self.index.append(index.long())

    def one_tensor_per_state(self) -> None:
        # torchmetrics gathers list states element by element; ranks holding different numbers of
        # batches (or none) would wait on each other forever. One (possibly empty) tensor each.
        empty = {
            "features": torch.empty(0, self.dim),
            "labels": torch.empty(0, dtype=torch.long),
            "index": torch.empty(0, dtype=torch.long),
        }
        for name, blank in empty.items():
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, [torch.cat(value) if value else blank.to(self.device)])

    def compute(self) -> FakeFeatures:
        cat = [v if torch.is_tensor(v) else torch.cat(v) for v in (self.features, self.labels, self.index)]
        order = cat[2].argsort()
        return FakeFeatures(cat[0][order], cat[1][order])


class MetricSuite(nn.Module):
    def __init__(
        self,
        names: list[str],
        extractors: dict[str, Extractor],
        options: dict[str, Any] | None = None,
        sync: bool = True,
    ):
        super().__init__()
        self.names = check_metric_names(names)
        self.specs: dict[str, MetricSpec] = {n: METRICS.get(n) for n in self.names}
        self.extractors = extractors
        self.options = dict(options or {})
        states: dict[str, Metric] = {}
        for spec in self.specs.values():
            width = extractors[spec.extractor].outputs[spec.output]
            key = self._state_key(spec)
            if key not in states:
                cls = MomentState if spec.fake == "moments" else FeatureState
                states[key] = cls(width, sync_on_compute=sync)
        self.states = nn.ModuleDict(states)
        self.real: dict[str, dict[str, RealSide]] = {}
        self._fakes: dict[str, Any] = {}
        self._seen = 0

    @staticmethod
    def _state_key(spec: MetricSpec) -> str:
        return f"{spec.extractor}__{spec.output}__{spec.fake}"

    # ------------------------------------------------------------------ real side
    def needs_real(self) -> dict[str, dict[str, bool]]:
        """extractor -> output -> whether the reference feature vectors themselves are needed."""
        out: dict[str, dict[str, bool]] = {}
        for spec in self.specs.values():
            if spec.real:
                outputs = out.setdefault(spec.extractor, {})
                outputs[spec.output] = outputs.get(spec.output, False) or spec.real == "features"
        return out

    def load_real(self, real: dict[str, dict[str, RealSide]]) -> None:
        self.real = real

    # ------------------------------------------------------------------ fake side
    @torch.no_grad()
    def update(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        index: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """A batch of generated uint8 (N, H, W, C) samples, the labels they were asked for and their
        positions in the sample set (default: in the order they arrive)."""
        device = self.device
        n = len(images)
        if index is None:
            index = torch.arange(self._seen, self._seen + n)
        self._seen += n
        index = torch.as_tensor(np.asarray(index), device=device)
        labels = torch.as_tensor(np.asarray(labels), device=device)
        outputs: dict[str, dict[str, torch.Tensor]] = {}
        for spec in self.specs.values():
            if spec.extractor not in outputs:  # each network runs once per batch
                ex = self.extractors[spec.extractor]
                outputs[spec.extractor] = ex.net.to(device)(to_metric_input(images, ex.rgb, device))
        for key, state in self.states.items():
            extractor, output, _ = key.split("__")
            f = outputs[extractor][output].float()
            if isinstance(state, MomentState):
                state.update(f)
            else:
                state.update(f, labels, index)

    @property
    def device(self) -> torch.device:
        return next(iter(self.states.values())).device

    def compute(self) -> dict[str, float]:
        """Every process must call this (it synchronises the accumulated states)."""
        fakes = {}
        for key, state in self.states.items():
            if isinstance(state, FeatureState):
                state.one_tensor_per_state()
            fakes[key] = state.compute()
        self._fakes = fakes
        opts = {**self.options, "_cache": {}}
        out: dict[str, float] = {}
        for name, spec in self.specs.items():
            real = None
            if spec.real:
                side = self.real.get(spec.extractor, {}).get(spec.output)
                real = side.moments if side is not None and spec.real == "moments" else getattr(side, "features", None)
                if real is None:
                    raise RuntimeError(
                        f"{name}: the reference statistics for {spec.extractor}/{spec.output} were not loaded"
                    )
            value = spec.compute(fakes[self._state_key(spec)], real, opts)
            if isinstance(value, tuple):  # (mean, std) of KID / IS
                out[name], out[f"{name}_std"] = float(value[0]), float(value[1])
            else:
                out[name] = float(value)
        return out

    def fake_sides(self) -> dict[str, dict[str, RealSide]]:
        """The generated set's statistics from the last :meth:`compute`, shaped like a reference
        (to write it as an ADM-layout batch that other runs can be scored against)."""
        out: dict[str, dict[str, RealSide]] = {}
        for key, fake in self._fakes.items():
            extractor, output, kind = key.split("__")
            side = out.setdefault(extractor, {}).setdefault(output, RealSide())
            if kind == "moments":
                side.moments = fake
            else:
                side.features = fake.features
                side.moments = side.moments or Moments.of(fake.features)
        return out

    def reset(self) -> None:
        """Forget the generated samples; the reference statistics stay."""
        for state in self.states.values():
            state.reset()
        self._seen = 0
