"""SiT-style flow matching / stochastic interpolants (SiT, Ma et al., arXiv 2401.08740;
official repository ``transport/``).

Conventions are SiT's: t = 0 is noise, t = 1 is data, and the network receives the float t in
[0, 1] unscaled (no ×1000, as SiT's ``transport/transport.py``). The network predicts C channels: a velocity (default), a
noise or a score. The backbone is not told which; only :meth:`FlowObjective.loss` and
:meth:`FlowObjective.velocity` interpret its output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ditlab.errors import DitlabError
from ditlab.objectives.base import OBJECTIVES, ModelFn, Objective
from ditlab.objectives.gaussian import mean_flat
from ditlab.objectives.paths import build_path, expand_t_like_x
from ditlab.objectives.time_sampling import NoiseLevelSampler
from ditlab.registry import split_name

PREDICTIONS = ("velocity", "noise", "score")
LOSS_WEIGHTS = (None, "velocity", "likelihood")


@OBJECTIVES.register("flow")
class FlowObjective(Objective):
    """``path`` linear|gvp|vp (or a registered one, see :mod:`ditlab.objectives.paths`), ``prediction``
    velocity|noise|score, ``time_sampling`` uniform|logit_normal and ``time_shift`` (see
    :mod:`ditlab.objectives.time_sampling`)."""

    family = "flow"
    name = "flow"

    def __init__(
        self,
        path: str | Mapping = "linear",
        prediction: str = "velocity",
        loss_weight: str | None = None,
        time_sampling: str = "uniform",
        logit_normal_mean: float = 0.0,
        logit_normal_std: float = 1.0,
        time_shift: float = 1.0,
        train_eps: float | None = None,
        sample_eps: float | None = None,
        path_module: str | None = None,
        path_options: dict | None = None,
    ):
        if prediction not in PREDICTIONS:
            raise DitlabError(
                f"unknown flow prediction '{prediction}'; set objective.prediction to one of {PREDICTIONS}"
            )
        if loss_weight not in LOSS_WEIGHTS:
            raise DitlabError(
                f"unknown loss weight '{loss_weight}'; set objective.loss_weight to null, velocity or likelihood"
            )
        self.path = build_path(path, path_module, path_options)
        # the path's own options, whichever spelling named them: what summaries record
        self.path_options = (split_name(path)[2] if isinstance(path, Mapping) else {}) or dict(path_options or {})
        self.prediction = prediction
        self.loss_weight = loss_weight
        self.noise_levels = NoiseLevelSampler(time_sampling, logit_normal_mean, logit_normal_std, time_shift)
        # SiT's ε defaults (transport/__init__.py): VP 1e-5 / 1e-3; noise and score 1e-3; velocity 0.
        default_train, default_sample = (
            (1e-5, 1e-3) if self.path.name == "vp" else ((0.0, 0.0) if prediction == "velocity" else (1e-3, 1e-3))
        )
        self.train_eps = default_train if train_eps is None else float(train_eps)
        self.sample_eps = default_sample if sample_eps is None else float(sample_eps)

    def interval(self, eval: bool = False) -> tuple[float, float]:
        """SiT's ``check_interval`` for training (eval=False) and the ODE (eval=True): (t0, t1)."""
        eps = self.sample_eps if eval else self.train_eps
        if self.path.name == "vp":
            return 0.0, 1.0 - eps
        if self.prediction != "velocity":
            return eps, 1.0 - eps
        return 0.0, 1.0

    # ------------------------------------------------------------------ training
    def sample_t(self, n: int) -> torch.Tensor:
        """(n,) times in the training interval, drawn on the CPU generator like SiT."""
        t0, t1 = self.interval(eval=False)
        if self.noise_levels.is_default:
            u = torch.rand((n,))  # SiT's draw, kept bit-for-bit
        else:  # logit-normal and/or shifted: drawn as a noise level τ (SD3), SiT time t = 1 − τ
            u = 1 - self.noise_levels.sample(n)
        return u * (t1 - t0) + t0

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, model_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        # ``x0`` is the clean data (SiT's x1). RNG order as SiT's Transport.sample: noise, then t.
        noise = torch.randn_like(x0)
        t = self.sample_t(x0.shape[0]).to(x0)
        return self.loss_at(model_fn, x0, t, noise, model_kwargs)

    def loss_at(self, model_fn, data, t, noise, model_kwargs) -> dict[str, torch.Tensor]:
        tb = expand_t_like_x(t, data)
        x_t, u_t = self.path.plan(tb, noise, data)
        out = model_fn(x_t, t, **model_kwargs)
        if out.shape != data.shape:
            raise DitlabError(
                f"the flow objective needs {data.shape[1]} output channels, the model gave {out.shape[1]}"
            )
        if self.prediction == "velocity":
            return {"loss": mean_flat((out - u_t) ** 2)}
        _, drift_var = self.path.drift(x_t, tb)
        sigma, _ = self.path.sigma(tb)
        weight = {None: 1.0, "velocity": (drift_var / sigma) ** 2, "likelihood": drift_var / sigma**2}[self.loss_weight]
        if self.prediction == "noise":
            return {"loss": mean_flat(weight * (out - noise) ** 2)}
        return {"loss": mean_flat(weight * (out * sigma + noise) ** 2)}

    # ------------------------------------------------------------------ sampling
    def noise_level(self, t: float) -> float:
        return 1.0 - float(t)  # SiT's time: 0 is noise, 1 is data

    def velocity(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Network output at (x, t) -> the probability-flow ODE drift dx/dt (SiT ``get_drift``)."""
        if self.prediction == "velocity":
            return out
        tb = expand_t_like_x(t, x)
        score = out / -self.path.sigma(tb)[0] if self.prediction == "noise" else out
        return self.path.velocity_from_score(score, x, tb)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "path": self.path.name,
            **({"path_options": self.path_options} if self.path_options else {}),
            "prediction": self.prediction,
            "loss_weight": self.loss_weight,
            **self.noise_levels.describe(),
            "train_eps": self.train_eps,
            "sample_eps": self.sample_eps,
        }
