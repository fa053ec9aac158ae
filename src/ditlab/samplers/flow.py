"""Fixed-step ODE samplers for the ``flow`` objective: Euler and Heun from noise (t0) to data (t1).

The grid is ``linspace(t0, t1, steps + 1)`` over the objective's sampling interval, so ``steps``
is the number of integration steps (SiT's ``--num-sampling-steps N`` counts grid points: N − 1
steps). Euler's step is torchdiffeq's ``euler``, which SiT's ODE sampler uses. Heun (2nd order) adds a
corrector at the next grid point; like EDM it skips the corrector on the last step unless
``correct_last_step`` is set, so it costs 2·steps − 1 model calls.
"""

from __future__ import annotations

from typing import Any

import torch

from ditlab.objectives.base import Objective
from ditlab.samplers.base import SAMPLERS, Sampler
from ditlab.samplers.guidance import GuidedModel


class FlowODESampler(Sampler):
    families = ("flow",)

    def __init__(self, steps: int = 50):
        super().__init__(steps)

    def grid(self, objective: Objective) -> torch.Tensor:
        t0, t1 = objective.interval(eval=True)
        return torch.linspace(t0, t1, self.steps + 1)  # float32, like SiT's th.linspace

    @staticmethod
    def drift(model: GuidedModel, objective: Objective, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        t_batch = t.to(x).expand(x.shape[0])  # the float t, unscaled (SiT convention)
        out = model(x, t_batch, y, noise_level=objective.noise_level(t))
        return objective.velocity(out, x, t_batch)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "solver": "ode"}


@SAMPLERS.register("euler")
class EulerSampler(FlowODESampler):
    """x ← x + Δt·v(x, t): one model call per step."""

    name = "euler"

    def sample(self, model, objective, x_T, y, generator) -> torch.Tensor:
        ts = self.grid(objective)
        x = x_T
        for i in range(self.steps):
            x = x + (ts[i + 1] - ts[i]).to(x) * self.drift(model, objective, x, ts[i], y)
        return x


@SAMPLERS.register("heun")
class HeunSampler(FlowODESampler):
    """Heun's method (explicit trapezoid): Euler predictor, then the average of both slopes."""

    name = "heun"

    def __init__(self, steps: int = 25, correct_last_step: bool = False):
        super().__init__(steps)
        self.correct_last_step = correct_last_step

    def model_calls(self) -> int:
        return 2 * self.steps - (0 if self.correct_last_step else 1)

    def sample(self, model, objective, x_T, y, generator) -> torch.Tensor:
        ts = self.grid(objective)
        x = x_T
        for i in range(self.steps):
            dt = (ts[i + 1] - ts[i]).to(x)
            v = self.drift(model, objective, x, ts[i], y)
            x_euler = x + dt * v
            if i == self.steps - 1 and not self.correct_last_step:
                x = x_euler
            else:
                x = x + dt * 0.5 * (v + self.drift(model, objective, x_euler, ts[i + 1], y))
        return x

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "correct_last_step": self.correct_last_step}
