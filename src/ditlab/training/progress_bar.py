"""The training bar (``callbacks/progress_bar``): optimizer steps out of ``trainer.max_steps``.

Lightning's own bar counts the batches of one epoch and restarts each epoch, so a 1,000-step run on
a 14-batch dataset shows ``7/14`` and the epoch's ETA. ditlab's runs are step-based: this bar shows
``step/max_steps``, the rate over this attempt and the ETA of the whole run; a resumed run starts
at its checkpoint's step (and its rate counts only the steps trained since).
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from ditlab import progress


def _per_epoch(trainer: Any) -> bool:
    """No step limit (``max_steps=-1``): Lightning's own per-epoch bar."""
    return int(trainer.max_steps or -1) <= 0


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting ``trainer.global_step`` against ``trainer.max_steps``.

    A run without a step limit (``max_steps=-1``) keeps Lightning's per-epoch bar."""

    _log_file = False  # the bar writes to a file (a line per draw), not a terminal: set by init_train_tqdm

    def init_train_tqdm(self) -> Tqdm:
        if _per_epoch(self.trainer):
            return super().init_train_tqdm()
        log_file = not progress.is_terminal(sys.stdout)  # plain lines, at most every LOG_INTERVAL_S
        self._log_file = log_file
        return Tqdm(  # Lightning's arguments, counting steps from this attempt's first one
            desc=self.train_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=progress.stream(sys.stdout),
            mininterval=progress.LOG_INTERVAL_S if log_file else 0.1,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
            total=int(self.trainer.max_steps),
            initial=int(self.trainer.global_step),  # a resume continues from its checkpoint's step
            unit="step",
        )

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        if _per_epoch(trainer):
            super().on_train_epoch_start(trainer, *args)
            return
        if self._leave:  # Lightning's leave=True: a bar per epoch
            self.train_progress_bar = self.init_train_tqdm()
        # Not reset per epoch, so the rate and the ETA span the run.
        self.train_progress_bar.set_description(f"Training (epoch {trainer.current_epoch})", refresh=False)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if _per_epoch(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar, step = self.train_progress_bar, int(trainer.global_step)
        if bar is not None and not bar.disable and self._should_update(step, bar.total):
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.update(step - bar.n)  # redraws unless drawn less than mininterval ago

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if _per_epoch(trainer):
            super().on_train_epoch_end(trainer, pl_module)
            return
        # Lightning redraws here (set_postfix refreshes), right before on_train_end's close() draws the
        # same final state again: two identical last lines in a log file, where each draw is a line.
        # The next update or close() draws these metrics.
        bar = self.train_progress_bar
        if not bar.disable:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        if self._leave:
            bar.close()

    def on_train_end(self, trainer: Any, *args: Any) -> None:
        bar = self.train_progress_bar
        drawn = bar is not None and not bar.disable and bar.last_print_n == bar.n
        if not _per_epoch(trainer) and self._log_file and drawn:
            # The last update already wrote the final step's line (its LOG_INTERVAL_S had passed):
            # close without writing it again (on a terminal, leave=False would erase the bar).
            bar.leave = False
        super().on_train_end(trainer, *args)
