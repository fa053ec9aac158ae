"""Preemption: SIGTERM, SIGINT, SIGUSR1 (SLURM) and SIGUSR2 (submitit) stop a run at a step boundary.

The handler only records the signal. At the end of every step (before the step checkpoint) the
processes agree whether any of them was signalled (one all-reduce under DDP) and, if so, all stop
after that same step (Lightning's SIGTERM stop, which keeps the epoch open for an exact resume). ``train()`` then writes a full
``last.ckpt``, an ``interrupted`` summary, and exits with ``128 + signal`` (never 0: schedulers must
not read a preempted run as a success). Nothing is saved from inside a signal handler, so a
checkpoint never holds a half-done step.

Lightning's own SIGTERM handling is replaced while the loop runs: it raises on a rank as soon as
that rank is signalled, which under DDP can leave the other ranks waiting in a collective.

Requeueing, after the checkpoint is written: under plain SLURM (``sbatch --signal=USR1@90``) rank 0
runs ``scontrol requeue`` as Lightning would; under submitit (SIGUSR2) its own handler is called,
which resubmits the job. The requeued job reruns the same command and finds ``last.ckpt`` itself
(``ckpt_path=auto``, the default inside a requeued SLURM job).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any

import lightning as L
import torch

log = logging.getLogger("ditlab")
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


class RunInterrupted(SystemExit):
    """Raised by ``train()`` after the interrupted run is saved; its code is ``128 + signal``."""

    def __init__(self, signum: int, checkpoint: str):
        super().__init__(128 + signum)
        self.signum = signum
        self.checkpoint = checkpoint


class Preemption(L.Callback):
    """``with Preemption() as p:`` around ``trainer.fit`` (and in its callbacks); ``p.signum`` once stopped by a signal."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal this process received
        self.stopped_by: int | None = None  # the signal the run stopped for (agreed by all processes)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        self._previous = self._install()
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _install(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread
            return {}
        return {signum: signal.signal(signum, self._handle) for signum in SIGNALS}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()  # over the SIGTERM handler Lightning installed when fit started

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        signum = self.signum or 0
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([signum], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        if signum:
            self.stopped_by = signum
            # Lightning then raises SIGTERMException right after this batch (its `received_sigterm` is
            # read-only; this is the flag behind it). `should_stop` would instead close the epoch, and a
            # resume would skip the rest of it.
            trainer._signal_connector.received_sigterm = True

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        if self.signum is None:
            self.signum = signum
            log.warning("received %s: stopping after this step and saving a checkpoint", signal.Signals(signum).name)

    def requeue(self) -> None:
        """After the checkpoint is written: hand the job back to the scheduler (rank 0 only)."""
        if self.stopped_by is None:
            return
        previous = self._previous.get(self.stopped_by)
        if callable(previous) and getattr(previous, "__module__", "").startswith("submitit"):
            previous(self.stopped_by, None)  # submitit: checkpoint() -> resubmit, then exits
        elif self.stopped_by == getattr(signal, "SIGUSR1", None) and os.environ.get("SLURM_JOB_ID"):
            job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]
            result = subprocess.call(["scontrol", "requeue", job])
            log.info("scontrol requeue %s -> exit status %s", job, result)
