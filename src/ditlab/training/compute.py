"""Compute-matched runs: steps, evaluations and checkpoints placed by training compute, not by step.

Training compute follows the DiT paper (Figure 9, "Gflops x batch size x training steps x 3") and
ditlab's reports: ``C = Gflops x 3 x images seen``, with Gflops the model's forward GMACs per image
and images seen = steps x global batch. With the ``compute`` options (conf/train.yaml) every job of a
sweep gets the step count nearest a common budget, and evaluations/checkpoints at the steps nearest
each multiple of a common compute interval, so runs of different sizes line up at equal compute.
Rounding to whole steps is the only error: at most half of one step's compute, never accumulated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ditlab.errors import DitlabError


def training_compute(gflops: float, images_seen: float) -> float:
    """Training compute in Gflops, the paper's convention (Figure 9): forward Gflops x 3 (forward plus a
    backward pass of twice its cost) x images seen. ditlab's one place for it (summary.json, the plans
    here, ditlab-report)."""
    return 3 * gflops * images_seen


@dataclass(frozen=True)
class ComputePlan:
    gflops: float  # forward GMACs per image (the run's summary `gflops`)
    images_per_step: int  # global batch x gradient accumulation
    max_steps: int
    budget_gflops: float | None
    eval_steps: tuple[int, ...]  # empty: eval.every_n_steps as configured
    checkpoint_steps: tuple[int, ...]  # empty: checkpoint.every_n_steps as configured

    @property
    def step_gflops(self) -> float:
        return training_compute(self.gflops, self.images_per_step)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "step_gflops": self.step_gflops}


def nearest_step(compute: float, gflops: float, images_per_step: int) -> int:
    """The step whose cumulative compute is nearest ``compute`` (Gflops)."""
    return int(math.floor(compute / training_compute(gflops, images_per_step) + 0.5))


def compute_steps(interval: float, gflops: float, images_per_step: int, max_steps: int) -> tuple[int, ...]:
    """Steps nearest k x interval for k = 1, 2, ... up to max_steps (each rounded on its own: no drift)."""
    steps, k = [], 1
    while (step := nearest_step(k * interval, gflops, images_per_step)) <= max_steps:
        steps.append(step)
        k += 1
    return tuple(steps)


def plan_compute(
    compute_cfg: Any, gflops: float, images_per_step: int, max_steps: int, model: str = "model"
) -> ComputePlan | None:
    """The plan for ``cfg.compute`` (None when no option is set); a bad value is one DitlabError line."""
    cc = compute_cfg or {}
    budget, eval_every, ckpt_every = (
        cc.get(k) for k in ("budget_gflops", "eval_every_gflops", "checkpoint_every_gflops")
    )
    if budget is None and eval_every is None and ckpt_every is None:
        return None
    if not gflops or gflops <= 0:
        raise DitlabError(f"compute.* needs the model's Gflops, but {model} reports {gflops}")
    step = training_compute(gflops, images_per_step)
    for key, value in (
        ("budget_gflops", budget),
        ("eval_every_gflops", eval_every),
        ("checkpoint_every_gflops", ckpt_every),
    ):
        if value is not None and not float(value) >= step / 2:
            raise DitlabError(
                f"compute.{key}={value} is less than half a training step of {model} ({step:.4g} Gflops per step "
                f"= Gflops {gflops:g} x 3 x {images_per_step} images); raise it or leave it null"
            )
    if budget is not None:
        max_steps = nearest_step(float(budget), gflops, images_per_step)
    return ComputePlan(
        gflops=gflops,
        images_per_step=images_per_step,
        max_steps=int(max_steps),
        budget_gflops=None if budget is None else float(budget),
        eval_steps=compute_steps(float(eval_every), gflops, images_per_step, max_steps)
        if eval_every is not None
        else (),
        checkpoint_steps=compute_steps(float(ckpt_every), gflops, images_per_step, max_steps)
        if ckpt_every is not None
        else (),
    )
