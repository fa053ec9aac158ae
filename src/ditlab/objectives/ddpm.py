"""Improved-DDPM objective exactly as DiT trains it: ε prediction, learned-range Σ, MSE + VLB."""

from __future__ import annotations

from typing import Any

import torch

from ditlab.objectives.base import OBJECTIVES, ModelFn, Objective
from ditlab.objectives.gaussian import GaussianDiffusion, get_named_beta_schedule
from ditlab.objectives.time_sampling import NoiseLevelSampler


@OBJECTIVES.register("ddpm")
class DDPMObjective(Objective):
    """``schedule`` linear|cosine, ``prediction`` eps|x0|v (v: velocity, Salimans & Ho 2022),
    ``var_type`` learned_range|fixed_small|fixed_large, ``time_sampling`` uniform|logit_normal and
    ``time_shift`` over the timestep index (see :mod:`ditlab.objectives.time_sampling`)."""

    family = "ddpm"
    name = "ddpm"

    def __init__(
        self,
        num_timesteps: int = 1000,
        schedule: str = "linear",
        prediction: str = "eps",
        var_type: str = "learned_range",
        time_sampling: str = "uniform",
        logit_normal_mean: float = 0.0,
        logit_normal_std: float = 1.0,
        time_shift: float = 1.0,
    ):
        self.num_timesteps = num_timesteps
        self.schedule = schedule
        self.prediction = prediction
        self.var_type = var_type
        self.noise_levels = NoiseLevelSampler(time_sampling, logit_normal_mean, logit_normal_std, time_shift)
        self.diffusion = GaussianDiffusion(get_named_beta_schedule(schedule, num_timesteps), prediction, var_type)

    @property
    def learn_sigma(self) -> bool:
        return self.var_type == "learned_range"

    def out_channels(self, in_channels: int) -> int:
        return 2 * in_channels if self.learn_sigma else in_channels

    def noise_level(self, t: float) -> float:
        return float(t) / (self.diffusion.num_timesteps - 1)  # t: an index into the training chain

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, model_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        # RNG order as in the official train.py: t, then noise, then the model (label dropout).
        t = self.sample_t(x0.shape[0], x0.device)
        noise = torch.randn_like(x0)
        return self.loss_at(model_fn, x0, t, noise, model_kwargs)

    def sample_t(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n,) timestep indices: uniform as DiT (its exact draw), else ⌊τ·T⌋ of a noise level τ."""
        if self.noise_levels.is_default:
            return torch.randint(0, self.num_timesteps, (n,), device=device)
        tau = self.noise_levels.sample(n)
        return (tau * self.num_timesteps).long().clamp_(0, self.num_timesteps - 1).to(device)

    def loss_at(self, model_fn, x0, t, noise, model_kwargs) -> dict[str, torch.Tensor]:
        x_t = self.diffusion.q_sample(x0, t, noise)
        out = model_fn(x_t, t, **model_kwargs)
        return self.diffusion.training_losses(out, x0, x_t, t, noise)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "num_timesteps": self.num_timesteps,
            "schedule": self.schedule,
            "prediction": self.prediction,
            "var_type": self.var_type,
            # Only when changed: default runs describe themselves exactly as before these options existed.
            **({} if self.noise_levels.is_default else self.noise_levels.describe()),
        }
