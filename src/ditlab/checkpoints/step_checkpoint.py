"""Lightning's ModelCheckpoint, optionally at a given list of steps instead of every N steps.

``compute.checkpoint_every_gflops`` places checkpoints at the steps nearest each multiple of a compute
interval; those steps are not evenly spaced, so the periodic trigger is replaced by a lookup.
A step file that is already there (an earlier attempt saved that step) is replaced, never versioned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    def __init__(self, steps: Iterable[int] | None = None, **kwargs: Any) -> None:
        self.steps = None if steps is None else set(int(s) for s in steps)
        if self.steps is not None:
            kwargs["every_n_train_steps"] = 1  # every step is a candidate; the list decides
        # A resume from an earlier checkpoint saves the same steps again: replace those files (the same
        # state, bitwise) instead of adding step...-v1.ckpt copies next to them.
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(**kwargs)

    def on_train_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:
        if self.steps is None or trainer.global_step in self.steps:
            super().on_train_batch_end(trainer, *args, **kwargs)
