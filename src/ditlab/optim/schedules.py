"""Learning-rate schedules: the multiplier of ``optim.lr`` at each optimizer step (0-based).

Each is a small class, not a closure: torch's ``LambdaLR`` stores a callable object's attributes in its
state dict (plain numbers here, so checkpoints stay loadable with ``weights_only=True``), and a resume
continues the schedule at the step the checkpoint holds."""

from __future__ import annotations

import math

from ditlab.errors import DitlabError
from ditlab.registry import Registry

SCHEDULES: Registry = Registry("learning-rate schedule", "lr_schedule")


class Schedule:
    """Base: ``warmup_steps`` of linear warm-up (step k runs at (k + 1) / warmup_steps of the rate, so the
    first step already moves), then :meth:`after_warmup`."""

    def __init__(self, warmup_steps: int = 0):
        if int(warmup_steps) < 0:
            raise DitlabError(f"lr_schedule.warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        return 1.0

    def describe(self) -> dict:
        return {"name": type(self).name, **self.__dict__}


@SCHEDULES.register("constant")
class Constant(Schedule):
    """DiT's schedule: the same rate at every step (no scheduler is attached)."""

    name = "constant"

    def __init__(self):
        super().__init__(0)


@SCHEDULES.register("warmup_constant")
class WarmupConstant(Schedule):
    name = "warmup_constant"


@SCHEDULES.register("warmup_cosine")
class WarmupCosine(Schedule):
    """Warm-up, then half a cosine from the full rate down to ``final_fraction`` of it at ``total_steps``."""

    name = "warmup_cosine"

    def __init__(self, warmup_steps: int, total_steps: int, final_fraction: float = 0.0):
        super().__init__(warmup_steps)
        if int(total_steps) <= self.warmup_steps:
            raise DitlabError(
                f"lr_schedule.total_steps ({total_steps}) must exceed lr_schedule.warmup_steps ({warmup_steps})"
            )
        if not 0.0 <= float(final_fraction) <= 1.0:
            raise DitlabError(f"lr_schedule.final_fraction must lie in [0, 1], got {final_fraction}")
        self.total_steps, self.final_fraction = int(total_steps), float(final_fraction)

    def after_warmup(self, step: int) -> float:
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("inverse_sqrt")
class InverseSqrt(Schedule):
    """Warm-up, then the full rate until ``decay_start`` and rate / sqrt(step / decay_start) after it
    (EDM2's schedule, Karras et al. 2024, arXiv 2312.02696, eq. 16: no end point to choose in advance)."""

    name = "inverse_sqrt"

    def __init__(self, warmup_steps: int, decay_start: int):
        super().__init__(warmup_steps)
        if int(decay_start) <= 0:
            raise DitlabError(f"lr_schedule.decay_start must be a positive step, got {decay_start}")
        self.decay_start = int(decay_start)

    def after_warmup(self, step: int) -> float:
        return 1.0 / math.sqrt(max((step + 1) / self.decay_start, 1.0))
