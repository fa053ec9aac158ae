"""The LightningModule: encode -> objective loss on the DiT -> AdamW step -> EMA update.

It never looks inside the encoder, the objective or the block design; each arrives built from
its own config group.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from ditlab.auxloss import AuxLoss, NoAux
from ditlab.encoders.base import LatentEncoder
from ditlab.errors import DitlabError
from ditlab.models.dit import DiT
from ditlab.objectives.base import Objective
from ditlab.training.ema import make_ema, update_ema


class DiffusionModule(L.LightningModule):
    def __init__(
        self,
        model: DiT,
        objective: Objective,
        encoder: LatentEncoder,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        ema_decay: float = 0.9999,
        images_per_step: int = 1,
        meta: dict[str, Any] | None = None,
        aux: AuxLoss | None = None,
    ):
        super().__init__()
        self.model = model
        self.aux = aux if aux is not None else NoAux()  # extra loss terms (REPA); its projector trains too
        self.ema = make_ema(model)
        self.objective = objective
        # Not registered as a submodule: the frozen encoder stays out of checkpoints and the optimizer.
        self.__dict__["encoder"] = encoder
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.ema_decay = ema_decay
        self.images_per_step = images_per_step  # global batch x gradient accumulation
        self.meta = meta or {}

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, y)

    def on_fit_start(self) -> None:
        self.encoder.to(self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        z = self.encoder.encode(x)
        with self.aux.watch(self.model):
            terms = self.objective.loss(self.model, z, {"y": y})
        terms = self.aux.add_to(terms, x)  # adds e.g. "repa" and its weighted sum to "loss"
        loss = terms["loss"].mean()
        self._last_loss = loss.detach()
        # Reading a value back (finiteness check, logging) waits for the GPU: done on logging steps only,
        # when the logger reads it anyway. A non-finite loss also blocks every checkpoint save.
        if self._is_logging_step():
            self._check_finite()
            for name, value in terms.items():
                self.log(f"train/{name}", value.mean(), prog_bar=name == "loss", sync_dist=True)
            self.log("train/images_seen", float((self.global_step + 1) * self.images_per_step), sync_dist=False)
        return loss

    def _is_logging_step(self) -> bool:
        trainer = self._trainer  # None when stepped by hand (benchmarks): nothing to log to
        if trainer is None:
            return False
        step = self.global_step + 1
        return step % trainer.log_every_n_steps == 0 or step >= (trainer.max_steps or -1) > 0

    def _check_finite(self) -> None:
        loss = getattr(self, "_last_loss", None)
        if loss is not None and not torch.isfinite(loss):
            raise DitlabError(
                f"the training loss became {loss.item()} by step {self.global_step}; the last good checkpoint "
                "is kept. Lower optim.lr, set trainer.gradient_clip_val=1.0, or use trainer.precision=32-true"
            )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Called once per optimizer step (at accumulation boundaries), before any callback's
        # on_train_batch_end: checkpoints and evaluations of step N both see the EMA after N updates.
        super().optimizer_step(*args, **kwargs)
        update_ema(self.ema, self.model, self.ema_decay)

    def configure_optimizers(self):
        params = [p for p in [*self.model.parameters(), *self.aux.parameters()] if p.requires_grad]
        return make_adamw(params, self.lr, self.weight_decay, self.betas)

    def train(self, mode: bool = True) -> "DiffusionModule":
        super().train(mode)
        self.ema.eval()  # the EMA copy never runs label dropout
        return self

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_finite()  # never write diverged weights over the last good checkpoint
        checkpoint["ditlab"] = self.meta
        np_state = np.random.get_state()
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
            "python": _plain(random.getstate()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, *rest = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
            version, state, gauss = rng["python"]
            random.setstate((version, tuple(state), gauss))


def make_adamw(params: list[torch.Tensor], lr: float, weight_decay: float, betas: tuple[float, float]):
    """AdamW with torch's fused kernel (one kernel for all tensors; CPU and CUDA) where it exists. torch's
    default on CPU is a Python loop over the tensors: 2.4x slower per step for DiT-tiny, measured."""
    fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused)


def _plain(value: Any) -> Any:
    """Tuples -> lists and numpy scalars -> Python scalars, so torch.load(weights_only=True) accepts them."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
