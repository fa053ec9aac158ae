"""Lightning's ``EarlyStopping``, checked right after each evaluation when it watches ``eval/<metric>``.

Lightning checks at the end of every training epoch. Evaluation metrics arrive every
``eval.every_n_steps`` steps, which rarely falls on an epoch end: before the first evaluation the
key is missing (Lightning stops the run with a RuntimeError), and after it each epoch end would
re-read the last value and count it as one more check without improvement. Watching an ``eval/*``
key, this subclass checks after each evaluation instead (so ``patience`` counts evaluations, and
the run stops at the evaluation's step); any other key is checked as Lightning does. ``train()``
puts it after the evaluation callback, so at an evaluation step it reads the value just logged.
When it stops a run, it says so in one ``ditlab`` log line (step, monitored key, Lightning's reason).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping

EVAL_PREFIX = "eval/"
log = logging.getLogger("ditlab")


class EarlyStopping(LightningEarlyStopping):
    _evaluators: tuple[Any, ...] = ()  # the run's evaluation callbacks, found once in setup

    @property
    def watches_eval(self) -> bool:
        return self.monitor.startswith(EVAL_PREFIX)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        from ditlab.training.eval_callback import EvalCallback  # lazy: keeps this module light for Hydra

        self._evaluators = tuple(c for c in trainer.callbacks if isinstance(c, EvalCallback))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.watches_eval:
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.watches_eval:
            super().on_validation_end(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.watches_eval and not self._should_skip_check(trainer) and self._evaluated_at(trainer.global_step):
            self._run_early_stopping_check(trainer)  # on every rank: its stop decision is collective

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        stopping_already = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not stopping_already and trainer.is_global_zero:
            # Lightning's own message is logged only with verbose=True, and not through ditlab's log.
            reason = getattr(self, "stopping_reason_message", None) or f"no improvement in {self.patience} checks"
            log.info("early stopping at step %d (%s): %s", trainer.global_step, self.monitor, reason)

    def _evaluated_at(self, step: int) -> bool:
        # An evaluation that computed the watched metric (a val_loss-only one between them did not).
        key = self.monitor.removeprefix(EVAL_PREFIX)
        return any(c.history and c.history[-1]["step"] == step and key in c.history[-1] for c in self._evaluators)
