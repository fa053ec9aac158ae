"""Any diffusers scheduler (DPM-Solver++ by default) on the objective's own noise schedule.

The scheduler is built from the objective's betas (``trained_betas``), its prediction type and its
number of training steps, so nothing about the schedule is declared twice. Two details matter
(both in diffusers' `schedulers/scheduling_dpmsolver_multistep.py`):

* only the C-channel prediction is passed to ``step``: the learned-Σ half is dropped here,
  because ``variance_type="learned_range"`` in DPM-Solver slices ``[:, :3]`` (RGB) and crashes
  on 4-channel latents;
* the network receives the scheduler's timesteps, which are indices into the training chain
  (integers 0..T−1), exactly what it was trained on.

Note: diffusers keeps ᾱ in float32 (ditlab's own DDPM/DDIM use float64 tables).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ditlab.errors import DitlabError
from ditlab.objectives.base import Objective
from ditlab.samplers.base import SAMPLERS, Sampler, check_steps

PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


@SAMPLERS.register("diffusers")
class DiffusersSampler(Sampler):
    """``scheduler``: a diffusers scheduler class name; ``options``: its constructor arguments."""

    name = "diffusers"
    families = ("ddpm",)

    def __init__(self, steps: int = 25, scheduler: str = "DPMSolverMultistepScheduler", options: dict | None = None):
        super().__init__(steps)
        self.scheduler = scheduler
        self.options = dict(options or {})

    def build(self, objective: Objective):
        """A fresh scheduler (they are stateful) with ``steps`` inference timesteps set."""
        import diffusers  # lazy for start-up: slow to import, needed only by this sampler

        check_steps(self.steps, objective)
        diffusion = objective.diffusion
        cls = getattr(diffusers, self.scheduler, None)
        if cls is None or not hasattr(cls, "set_timesteps"):
            raise DitlabError(
                f"sampler.scheduler '{self.scheduler}' is not a diffusers scheduler class, "
                "e.g. DPMSolverMultistepScheduler or UniPCMultistepScheduler"
            )
        try:
            scheduler = cls(
                num_train_timesteps=diffusion.num_timesteps,
                trained_betas=diffusion.betas.tolist(),
                prediction_type=PREDICTION_TYPES[diffusion.mean_type],
                **self.options,
            )
        except (TypeError, ValueError) as e:
            raise DitlabError(f"bad sampler.options for {self.scheduler}: {e}") from None
        scheduler.set_timesteps(self.steps)
        if hasattr(scheduler, "set_begin_index"):
            # Step i is the i-th timestep. Without this, diffusers finds each step by looking its timestep
            # up in the list, which fails when noise levels round to the same training step (Karras sigmas
            # on a cosine schedule give 999 three times: an IndexError on the last step).
            scheduler.set_begin_index(0)
        return scheduler

    def sample(self, model, objective, x_T, y, generator) -> torch.Tensor:
        scheduler = self.build(objective)
        accepts_generator = "generator" in inspect.signature(scheduler.step).parameters
        C = x_T.shape[1]
        x = x_T * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            t_model = torch.full((x.shape[0],), int(round(float(t))), device=x.device, dtype=torch.long)
            out = model(scheduler.scale_model_input(x, t), t_model, y, noise_level=objective.noise_level(t))
            kwargs = {"generator": generator} if accepts_generator else {}
            x = scheduler.step(out[:, :C], t, x, **kwargs).prev_sample
        return x

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "scheduler": self.scheduler,
            **({"options": self.options} if self.options else {}),
        }


@SAMPLERS.register("dpm_solver")
class DPMSolverSampler(DiffusersSampler):
    """DPM-Solver++ multistep (Lu et al. 2022): deterministic, 2nd order, ~10-25 steps."""

    name = "dpm_solver"

    def __init__(self, steps: int = 25, options: dict | None = None):
        super().__init__(steps, "DPMSolverMultistepScheduler", options)
