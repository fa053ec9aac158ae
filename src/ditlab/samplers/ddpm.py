"""Ancestral DDPM and DDIM sampling on a respaced chain of the objective's own schedule."""

from __future__ import annotations

from typing import Any

import torch

from ditlab.errors import DitlabError
from ditlab.objectives.base import Objective
from ditlab.samplers.base import SAMPLERS, Sampler, check_steps
from ditlab.samplers.guidance import GuidedModel


def respaced(objective: Objective, spec: str):
    check_steps(int(spec[4:]) if spec.startswith("ddim") else sum(int(s) for s in spec.split(",")), objective)
    return objective.diffusion.respace(spec)


@SAMPLERS.register("ddpm")
class DDPMSampler(Sampler):
    """Ancestral sampling with the learned (or fixed) variance; ``steps`` respaced as in DiT (default 250)."""

    name = "ddpm"
    families = ("ddpm",)

    def __init__(self, steps: int = 250, clip_denoised: bool = False):
        super().__init__(steps)
        self.clip_denoised = clip_denoised

    def spacing(self) -> str:
        return str(self.steps)

    def step(self, diffusion, out, x, t, noise):
        return diffusion.p_sample(out, x, t, noise, clip_denoised=self.clip_denoised)["sample"]

    def sample(self, model: GuidedModel, objective: Objective, x_T, y, generator) -> torch.Tensor:
        diffusion = respaced(objective, self.spacing())
        x = x_T
        for i in reversed(range(diffusion.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            t_model = diffusion.model_timesteps(t)
            out = model(x, t_model, y, noise_level=objective.noise_level(t_model[0]))
            # Noise drawn after the model call, once per step (official order).
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = self.step(diffusion, out, x, t, noise)
        return x

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spacing": self.spacing()}


@SAMPLERS.register("ddim")
class DDIMSampler(DDPMSampler):
    """DDIM (η = 0 deterministic). ``spacing: even`` keeps 0 and T-1 like DDPM; ``ddim`` is DiT's ``ddimN``."""

    name = "ddim"

    def __init__(self, steps: int = 50, eta: float = 0.0, spacing: str = "even", clip_denoised: bool = False):
        super().__init__(steps, clip_denoised)
        if spacing not in ("even", "ddim"):
            raise DitlabError(f"sampler.spacing must be 'even' or 'ddim', got '{spacing}'")
        self.eta = eta
        self._spacing = spacing

    def spacing(self) -> str:
        return f"ddim{self.steps}" if self._spacing == "ddim" else str(self.steps)

    def step(self, diffusion, out, x, t, noise):
        return diffusion.ddim_sample(out, x, t, noise, eta=self.eta, clip_denoised=self.clip_denoised)["sample"]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "eta": self.eta}
