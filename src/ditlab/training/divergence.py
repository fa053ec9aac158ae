"""Stop a diverged run before any checkpoint of its diverged weights exists.

Two checks, both without a GPU sync on ordinary steps:

* every step folds the loss into a device-side flag (non-finite or above ``max_loss``); the flag is
  read every ``log_every_n_steps`` steps (where Lightning syncs for logging anyway) and before every
  checkpoint;
* before every checkpoint the weights about to be saved are checked themselves: all finite, and
  their loss on the last batch below ``max_loss``. A step can ruin the weights after its own loss
  was computed, so the loss history alone cannot vouch for them.

ditlab's objectives regress unit-variance targets, so their losses are of order 1 at
initialisation; ``max_loss`` (default 1e3, ``divergence.max_loss``) is far above any healthy value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ditlab.errors import DitlabError


class DivergenceGuard:
    def __init__(self, max_loss: float = 1.0e3):
        self.max_loss = float(max_loss)
        self._worst: torch.Tensor | None = None  # the largest loss seen (NaN once one was NaN)
        self._worst_step: torch.Tensor | None = None
        self._batch: Any = None
        self.last_good_step: int | None = None  # step of the newest checkpoint this guard let through

    def remember(self, batch: Any) -> None:
        self._batch = batch

    def check_loss(self, loss: torch.Tensor, step: int, trainer: Any) -> None:
        value = loss.detach().float()
        if self._worst is None or self._worst.device != value.device:
            self._worst, self._worst_step = value.new_tensor(-math.inf), value.new_tensor(-1.0)
        # The largest loss so far; the first NaN sticks (NaN compares false, so it is tracked explicitly).
        worse = (value > self._worst) | (torch.isnan(value) & ~torch.isnan(self._worst))
        self._worst = torch.where(worse, value, self._worst)
        self._worst_step = torch.where(worse, value.new_tensor(float(step)), self._worst_step)
        if trainer is None:  # stepped by hand (benchmarks): no read-back
            return
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
        last = (getattr(trainer, "max_steps", -1) or -1) > 0 and step + 1 >= trainer.max_steps
        if (step + 1) % every == 0 or last:
            self.stop_if_diverged(trainer)

    def stop_if_diverged(self, trainer: Any) -> None:
        if self._worst is None:
            return
        worst, step = float(self._worst), int(self._worst_step)
        if _any_rank(trainer, not worst <= self.max_loss):
            raise DitlabError(self.message(f"the training loss became {worst:.4g} at step {step}", trainer))

    def check_weights(self, module: Any, trainer: Any) -> None:
        """Raise before a checkpoint of diverged weights is written (called from on_save_checkpoint)."""
        self.stop_if_diverged(trainer)
        finite = all(bool(torch.isfinite(p).all()) for p in module.model.parameters())
        loss = float(module.health_loss(self._batch)) if finite and self._batch is not None else math.nan
        bad = not finite or (self._batch is not None and not loss <= self.max_loss)
        if _any_rank(trainer, bad):
            what = "non-finite weights" if not finite else f"weights whose loss is {loss:.4g}"
            raise DitlabError(self.message(f"step {trainer.global_step} produced {what}", trainer))
        self.last_good_step = int(trainer.global_step)

    def message(self, what: str, trainer: Any) -> str:
        good = last_good_checkpoint(trainer, self.last_good_step)
        where = (
            f"the last good checkpoint is {good} (nothing after it was saved); resume from it with "
            f"ckpt_path={good} and a lower optim.lr (e.g. a quarter) and/or trainer.gradient_clip_val=1.0"
            if good
            else "no checkpoint was saved; restart with a lower optim.lr (e.g. a quarter) "
            "and/or trainer.gradient_clip_val=1.0"
        )
        return f"{what} (diverged; limit divergence.max_loss={self.max_loss:g}): {where}"


def last_good_checkpoint(trainer: Any, step: int | None) -> Path | None:
    """The checkpoint of ``step`` (the newest one the guard let through), else the newest file there."""
    callback = getattr(trainer, "checkpoint_callback", None)
    folder = Path(callback.dirpath) if callback is not None and callback.dirpath else None
    if folder is None or not folder.is_dir():
        return None
    if step is not None:
        for name in (f"step{step:07d}.ckpt", "last.ckpt"):  # ModelCheckpoint's names in train.py
            if (folder / name).is_file():
                return folder / name
    return max((p for p in folder.glob("*.ckpt") if p.is_file()), key=lambda p: p.stat().st_mtime_ns, default=None)


def _any_rank(trainer: Any, flag: bool) -> bool:
    strategy = getattr(trainer, "strategy", None)
    if strategy is None or getattr(trainer, "world_size", 1) <= 1:
        return flag
    return bool(strategy.reduce_boolean_decision(flag, all=False))
