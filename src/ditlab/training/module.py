"""The LightningModule: encode -> objective loss on the DiT -> optimizer step (+ LR schedule) -> EMA update.

It never looks inside the encoder, the objective or the block design; each arrives built from
its own config group.

Randomness of a step (timesteps, noise, label dropout) comes from the global torch generators
reseeded from ``(seed, global rank, step, micro-batch)`` for that step and restored afterwards: each
DDP rank draws its own, a resumed run draws exactly what the uninterrupted one drew, and no RNG
state needs to be checkpointed (only rank 0 writes checkpoints, so per-rank states would be lost).
The data pipeline keeps the global stream to itself (see :mod:`ditlab.resumable_loader`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch

from ditlab.auxloss import AuxLoss, NoAux
from ditlab.encoders.base import LatentEncoder
from ditlab.models.dit import DiT
from ditlab.objectives.base import Objective
from ditlab.optim import Schedule
from ditlab.optim.optimizers import adamw
from ditlab.training.divergence import DivergenceGuard
from ditlab.training.ema import make_ema, update_ema


class DiffusionModule(L.LightningModule):
    def __init__(
        self,
        model: DiT,
        objective: Objective,
        encoder: LatentEncoder,
        lr: float = 1e-4,
        optimizer: Callable[..., torch.optim.Optimizer] = adamw,
        lr_schedule: Schedule | None = None,
        ema_decay: float = 0.9999,
        images_per_step: int = 1,
        meta: dict[str, Any] | None = None,
        aux: AuxLoss | None = None,
        seed: int = 0,
        max_loss: float = 1.0e3,
    ):
        super().__init__()
        self.model = model
        self.aux = aux if aux is not None else NoAux()  # extra loss terms (REPA); its projector trains too
        self.ema = make_ema(model)
        self.objective = objective
        # Not registered as a submodule: the frozen encoder stays out of checkpoints and the optimizer.
        self.__dict__["encoder"] = encoder
        self.lr = lr
        # optimizer(named_params, lr=...) builds it (optim group); lr_schedule(step) scales lr (None: constant)
        self.make_optimizer, self.lr_schedule = optimizer, lr_schedule
        self.ema_decay = ema_decay
        self.images_per_step = images_per_step  # global batch x gradient accumulation
        self.meta = meta or {}
        self.seed = int(seed)
        self.guard = DivergenceGuard(max_loss)
        self._step_rng: Any = None

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, y)

    def on_fit_start(self) -> None:
        self.encoder.to(self.device)

    def on_train_start(self) -> None:
        # After a resume the optimizer (and scheduler) state comes from the checkpoint; the learning rate is
        # the run's (a resume may lower it, e.g. after a divergence; recorded in the run's resume log), scaled
        # by the schedule at the step the run continues from (the scheduler's own count of its steps).
        schedulers = [c.scheduler for c in self.trainer.lr_scheduler_configs]
        factor = self.lr_schedule(schedulers[0].last_epoch) if schedulers else 1.0
        for scheduler in schedulers:
            scheduler.base_lrs = [self.lr] * len(scheduler.base_lrs)
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = self.lr * factor

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, *stored = batch  # a latent cache with REPA features adds them: (x, y, features)
        z = self.encoder.encode(x)
        with self.aux.watch(self.model):
            terms = self.objective.loss(self.model, z, {"y": y})
        terms = self.aux.add_to(terms, stored[0] if stored else x)  # adds e.g. "repa" and its sum to "loss"
        loss = terms["loss"].mean()
        # Reading a value back (divergence check, logging) waits for the GPU: the guard folds the loss into a
        # device flag every step and reads it on logging steps only, when the logger reads values anyway.
        self.guard.check_loss(loss, self.global_step, self._trainer)  # None when stepped by hand (benchmarks)
        if self._is_logging_step():
            for name, value in terms.items():
                self.log(f"train/{name}", value.mean(), prog_bar=name == "loss", sync_dist=True)
            self.log("train/images_seen", float((self.global_step + 1) * self.images_per_step), sync_dist=False)
            # Logged at the step count after this optimizer step (N, as evaluations and checkpoints are), not
            # Lightning's 0-based batch index (N-1); Lightning's logger connector uses a logged "step" as the step.
            self.log("step", float(self.global_step + 1), sync_dist=False)
        return loss

    def _is_logging_step(self) -> bool:
        trainer = self._trainer  # None when stepped by hand (benchmarks): nothing to log to
        if trainer is None:
            return False
        step = self.global_step + 1
        return step % trainer.log_every_n_steps == 0 or step >= (trainer.max_steps or -1) > 0

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.guard.remember(batch)
        micro = batch_idx % self.trainer.accumulate_grad_batches
        self._step_rng = seeded_rng(self.device, self.seed, self.global_rank, self.global_step, micro)
        self._step_rng.__enter__()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._step_rng is not None:
            self._step_rng.__exit__(None, None, None)
            self._step_rng = None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Called once per optimizer step (at accumulation boundaries), before any callback's
        # on_train_batch_end: checkpoints and evaluations of step N both see the EMA after N updates.
        super().optimizer_step(*args, **kwargs)
        update_ema(self.ema, self.model, self.ema_decay)

    def configure_optimizers(self):
        named = [*self.model.named_parameters(), *self.aux.named_parameters(prefix="aux")]
        optimizer = self.make_optimizer([(n, p) for n, p in named if p.requires_grad], lr=self.lr)
        if self.lr_schedule is None:
            return optimizer
        # Stepped after every optimizer step: the multiplier of step k applies to optimizer step k.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train(self, mode: bool = True) -> DiffusionModule:
        super().train(mode)
        self.ema.eval()  # the EMA copy never runs label dropout
        return self

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Refuses (raises) when the weights about to be saved have diverged: no checkpoint of them exists.
        self.guard.check_weights(self, self.trainer)
        checkpoint["ditlab"] = self.meta

    def health_loss(self, batch) -> torch.Tensor:
        """The training loss of the current weights on ``batch`` (no gradients, fixed draws)."""
        x, y = batch[:2]
        with torch.no_grad(), seeded_rng(self.device, self.seed, self.global_rank, self.global_step, -1):
            return self.objective.loss(self.model, self.encoder.encode(x), {"y": y})["loss"].mean()


def step_seed(*key: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: nearby keys give unrelated streams)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1, np.uint64)[0] >> 1)


def seeded_rng(device: torch.device, seed: int, rank: int, step: int, micro: int) -> _SeededGenerators:
    """Context: the global CPU (and this CUDA device's) generators seeded for one step, restored on exit."""
    return _SeededGenerators(device, step_seed(seed, rank, step, micro))


class _SeededGenerators:
    # The default generators are seeded directly: torch.manual_seed also visits every backend (~2 ms).
    def __init__(self, device: torch.device, seed: int):
        self.generators = [torch.default_generator]
        if device.type == "cuda":
            self.generators.append(torch.cuda.default_generators[device.index or 0])
        self.seed = seed
        self.saved: list[torch.Tensor] = []

    def __enter__(self) -> None:
        self.saved = [g.get_state() for g in self.generators]
        for g in self.generators:
            g.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        for g, state in zip(self.generators, self.saved):
            g.set_state(state)
