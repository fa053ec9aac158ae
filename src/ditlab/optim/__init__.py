"""Optimizers and learning-rate schedules: two registries, one config group each (``optim``, ``lr_schedule``).

An optimizer entry is a function ``(named_params, **options) -> torch.optim.Optimizer``: it gets the
trainable ``(name, parameter)`` pairs so that it can split them into weight-decay groups
(:func:`decay_groups`). A schedule entry is a class whose instances map the optimizer step (0-based) to
a multiplier of ``optim.lr``; ``constant`` is no scheduler at all, so a constant-rate run is exactly
what it was before schedules existed. A user adds either with one Python file plus one YAML option
(docs/extending.md)."""

from ditlab.optim.optimizers import OPTIMIZERS, decay_groups
from ditlab.optim.schedules import SCHEDULES, Schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "Schedule", "decay_groups"]
