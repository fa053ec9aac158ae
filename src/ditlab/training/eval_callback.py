"""Sample-quality evaluation during training (the ``eval`` config group).

Every ``eval.every_n_steps`` optimizer steps, and once after the last step, the callback draws a
fixed, seeded, class-balanced sample set from the **EMA** weights, computes the configured metrics
(:mod:`ditlab.metrics.suite`) and logs each value together with the full sampling recipe, plus a
sample grid. The set is cut into chunks of ``eval.batch_size`` samples; chunk ``k`` always gets
the same labels and the noise seed ``(eval.seed, k)``, and under DDP process ``r`` draws chunks
``r, r + world, ...``. So the evaluated set does not depend on the number of processes, and every
process takes part in sampling and in the (collective) metric computation: none waits on another.

Outputs in the run directory: ``eval/metrics.jsonl`` (one row per evaluation: step, images seen,
values, recipe), ``eval/grid_step<N>.png``. The values enter Lightning's ``callback_metrics`` as
``eval/<metric>`` (so ``ModelCheckpoint(monitor=...)``, early stopping and the progress bar see them)
and the loggers get them, with the grid, at the evaluation's step (the recording:
:mod:`ditlab.training.eval_outputs`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ditlab.devices import autocast
from ditlab.errors import DitlabError
from ditlab.inputs import check_npz
from ditlab.metrics.extractors import build_extractor
from ditlab.metrics.reference import read_reference
from ditlab.metrics.suite import METRICS, MetricSuite, RealSide, check_metric_names, import_eval_modules, suite_options
from ditlab.metrics.val_loss import VAL_LOSS, ValidationLoss, val_loss_options
from ditlab.progress import bar as progress_bar
from ditlab.samplers.generate import SampleRecipe, generate
from ditlab.training.eval_outputs import (
    EVAL_DIR,
    HISTORY_FILE,
    logged_scalars,
    mark_last_row_final,
    metric_values,
    record_evaluation,
)
from ditlab.training.eval_ranks import rank_zero_first, rng_untouched, run_real_stats

PRECISIONS = ("fp32", "bf16")  # of ditlab.devices.AUTOCAST_DTYPES


def interleaved_class_labels(num_classes: int, num_samples: int) -> torch.Tensor:
    """0, 1, ..., C-1, 0, 1, ...: class counts differ by at most one and every chunk is balanced."""
    if num_classes <= 0:
        return torch.zeros(num_samples, dtype=torch.long)
    return torch.arange(num_samples) % num_classes


def chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1)[0])


def build_eval_callback(
    cfg: DictConfig, *, data: Any, sampler: Any, objective: Any, run_dir: Path
) -> EvalCallback | None:
    """The callback for ``cfg.eval``, or None when no metric is configured or nothing would run."""
    ec = cfg.eval
    names = list(ec.metrics or [])
    loss_every = val_loss_options(ec)["every_n_steps"] if VAL_LOSS in names else None
    if not names or (not ec.final and not ec.every_n_steps and not loss_every):
        return None
    import_eval_modules(ec)
    sampled = [n for n in names if n != VAL_LOSS]  # val_loss needs no samples (ditlab.metrics.val_loss)
    if sampled:
        check_metric_names(sampled)
    for key in ("num_samples", "batch_size"):
        if int(ec[key]) <= 0:
            raise DitlabError(f"eval.{key} must be positive, got {ec[key]}")
    if int(ec.every_n_steps) < 0:
        raise DitlabError(
            f"eval.every_n_steps must be 0 (only at the end) or a positive step count, got {ec.every_n_steps}"
        )
    if ec.precision not in PRECISIONS:
        raise DitlabError(f"eval.precision={ec.precision} is not one of {', '.join(PRECISIONS)}")
    if ec.get("reference") and not Path(str(ec.reference)).is_file():
        raise DitlabError(f"eval.reference={ec.reference} not found; point it at an ADM-layout .npz or set it to null")
    if ec.get("reference"):  # object arrays, no images, damaged: one line now, not after the run has started
        check_npz(ec.reference, "eval.reference")
    kernel = [n for n in sampled if METRICS.get(n).kind == "kernel"]
    if kernel and int(ec.kid_subset_size) > int(ec.num_samples):
        raise DitlabError(
            f"eval.kid_subset_size={ec.kid_subset_size} exceeds eval.num_samples={ec.num_samples} ({kernel[0]}); lower it"
        )
    return EvalCallback(
        ec, data=data, sampler=sampler, objective=objective, run_dir=run_dir, cache_dir=cfg.paths.cache_dir
    )


class EvalCallback(L.Callback):
    def __init__(self, eval_cfg: DictConfig, *, data: Any, sampler: Any, objective: Any, run_dir: Path, cache_dir: str):
        self.cfg = eval_cfg
        self.names = list(eval_cfg.metrics)
        self.sampled_names = [n for n in self.names if n != VAL_LOSS]
        self.every = int(eval_cfg.every_n_steps)
        self.val_loss: ValidationLoss | None = None  # the objective's loss on fixed inputs (no sampling)
        self.loss_every = 0  # also compute val_loss alone every this many steps (eval.val_loss.every_n_steps)
        if VAL_LOSS in self.names:
            opts = val_loss_options(eval_cfg)
            self.val_loss, self.loss_every = ValidationLoss(opts, data, objective), int(opts["every_n_steps"] or 0)
        self.at_steps: set[int] = set()  # also evaluate at these steps (compute.eval_every_gflops)
        self.data, self.sampler, self.objective = data, sampler, objective
        self.run_dir = Path(run_dir)
        self.cache_dir = cache_dir
        self.labels = interleaved_class_labels(data.num_classes, int(eval_cfg.num_samples))
        self.chunks = list(torch.split(self.labels, int(eval_cfg.batch_size)))
        self.guidance = {
            "scale": float(eval_cfg.guidance_scale),
            "channels": eval_cfg.guidance_channels,
            "interval": OmegaConf.to_container(eval_cfg.guidance_interval) if eval_cfg.guidance_interval else None,
        }
        self.suite: MetricSuite | None = None
        self.extractors: dict[str, Any] = {}
        self._real: dict[str, dict[str, RealSide]] = {}
        self.keep_final_samples = False  # set by train(): the final evaluation's images become samples.npz
        self.final_samples: tuple[np.ndarray, np.ndarray] | None = None
        self.reference: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._last_step = -1  # of the last full evaluation
        self._last_loss_step = -1  # of the last val_loss-only one

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.suite is not None or not self.sampled_names:
            return
        if len(self.chunks) < trainer.world_size:
            raise DitlabError(
                f"eval.num_samples={len(self.labels)} in chunks of eval.batch_size={self.cfg.batch_size} gives "
                f"{len(self.chunks)} chunk(s) for {trainer.world_size} processes; lower eval.batch_size"
            )
        device = trainer.strategy.root_device
        with rng_untouched(device):  # a cache miss (classifier training) must not change the training run
            # Rank 0 first: it may train the digits classifier or download Inception; the others then read them.
            rank_zero_first(trainer, lambda: self._build_suite(device))
            if self.cfg.get("reference"):  # a published reference batch (ADM layout) instead of data's images
                self._real = read_reference(
                    self.cfg.reference,
                    self.suite,
                    device=device,
                    batch_size=int(self.cfg.batch_size),
                    rank=trainer.global_rank,
                    world_size=trainer.world_size,
                )
                self.reference = {"file": str(self.cfg.reference)}
            else:
                for name, needs in self.suite.needs_real().items():
                    extractor = self.extractors[name]
                    stats, self.reference[name] = run_real_stats(
                        trainer, self.data, self.cfg, extractor, needs, device, self.cache_dir
                    )
                    self._real[name] = {o: s.side() for o, s in stats.items()}
        self.suite.load_real(self._real)

    def _build_suite(self, device: torch.device) -> None:
        ec = self.cfg
        needed = sorted({METRICS.get(n).extractor for n in self.sampled_names})
        self.extractors = {n: build_extractor(n, data=self.data, eval_cfg=ec, cache_dir=self.cache_dir) for n in needed}
        if "digits_accuracy" in self.sampled_names and self.data.num_classes <= 0:
            raise DitlabError(
                "digits_accuracy needs class-conditional data (num_classes > 0); drop it from eval.metrics"
            )
        self.suite = MetricSuite(self.sampled_names, self.extractors, suite_options(ec)).to(device)

    # ------------------------------------------------------------------ when
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # After optimizer step N: the EMA has seen all N updates (it is updated inside the module's
        # optimizer_step), and Lightning runs ModelCheckpoint's hook after this one, so a checkpoint
        # that monitors eval/<metric> at this step is ranked by the value just computed.
        step = trainer.global_step
        if step == 0 or step in (self._last_step, self._last_loss_step):
            return
        last = trainer.max_steps is not None and 0 < trainer.max_steps <= step
        due = (self.every and step % self.every == 0) or step in self.at_steps
        if due or (last and self.cfg.final):
            self.evaluate(trainer, pl_module, final=last, log_to=pl_module)
        elif self.loss_every and step % self.loss_every == 0:  # val_loss alone, between the evaluations
            self.evaluate(trainer, pl_module, final=False, log_to=pl_module, loss_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Training stopped before max_steps (max_epochs, early stopping): evaluate what there is.
        if self.cfg.final and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module, final=True)
        elif self.cfg.final and self.history:  # stopped at an evaluation step: that evaluation is the final one
            self.history[-1]["final"] = True
            if trainer.is_global_zero:  # metrics.jsonl says so too
                mark_last_row_final(self.run_dir, self.history[-1])

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A checkpoint that already reached trainer.max_steps: Lightning skips the training loop and
        # on_train_end, and has moved the module back to the CPU. Evaluate it where it trained
        # (this is how a finished run is evaluated again, e.g. at another guidance scale).
        if not self.cfg.final or trainer.global_step == self._last_step:
            return
        device = trainer.strategy.root_device
        pl_module.ema.to(device)
        pl_module.encoder.to(device)
        try:
            self.evaluate(trainer, pl_module, final=True, device=device)
        finally:
            pl_module.ema.cpu()
            pl_module.encoder.cpu()

    # ------------------------------------------------------------------ what
    def evaluate(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        final: bool,
        device: torch.device | None = None,
        log_to: L.LightningModule | None = None,
        loss_only: bool = False,
    ) -> dict[str, Any]:
        """Sample the fixed set, compute every metric (one extractor pass per network), record and log;
        ``loss_only``: val_loss alone (no sampling). With ``log_to``, the values also enter Lightning's
        ``callback_metrics`` (``pl_module.log``), where ModelCheckpoint(monitor=...), EarlyStopping and
        the progress bar read them."""
        step, rank, world = int(trainer.global_step), trainer.global_rank, trainer.world_size
        if loss_only:
            self._last_loss_step = step
        else:
            self._last_step = step
        t0 = time.time()
        device = device or pl_module.device
        row: dict[str, Any] = {
            "step": step,
            "images_seen": step * int(getattr(pl_module, "images_per_step", 0)),
            "final": final,
        }
        sampled, grid = {}, []
        if self.sampled_names and not loss_only:
            sampled, grid = self._sample_and_score(trainer, pl_module, final, device)
        loss = self.val_loss.compute(pl_module.ema, pl_module.encoder, device) if self.val_loss else None
        row["seconds"] = round(time.time() - t0, 2)
        if sampled:
            row.update(samples_per_process=sampled.pop("samples_per_process"), **sampled.pop("values"))
        if loss is not None:
            row[VAL_LOSS] = loss[VAL_LOSS]
            row["val_loss_strata"] = loss["val_loss_strata"]
            row["val_loss_recipe"] = {**self.val_loss.describe(), "seconds": loss["seconds"]}
        if sampled:
            row["recipe"] = self.recipe(trainer, pl_module, sampled["nfe"])
        scalars = logged_scalars(row, len(self.labels), self.guidance["scale"])
        if world > 1:  # every process logs the same numbers (sample counts and times differ per rank)
            scalars = trainer.strategy.broadcast(scalars, src=0)
        if log_to is not None:
            # On every rank (a monitored key logged on rank 0 only hangs DDP), not reduced: the values
            # are already global. logger=False: the loggers get them below, at this exact step.
            first = f"eval/{self.names[0]}"
            for key, value in scalars.items():
                log_to.log(
                    key, value, on_step=True, on_epoch=False, logger=False, sync_dist=False, prog_bar=key == first
                )
        if rank == 0:
            record_evaluation(trainer, self.run_dir, self.cfg, row, scalars, grid)
        self.history.append(row)
        return row

    def _sample_and_score(
        self, trainer: L.Trainer, pl_module: L.LightningModule, final: bool, device: torch.device
    ) -> tuple[dict[str, Any], list[tuple[np.ndarray, np.ndarray]]]:
        """Every process draws its chunks of the fixed set; the suite's (collective) values."""
        rank, world, step = trainer.global_rank, trainer.world_size, int(trainer.global_step)
        encoder = pl_module.encoder
        latent_shape = encoder.latent_shape(self.data.channels, self.data.resolution)
        grid: list[tuple[np.ndarray, np.ndarray]] = []
        kept: list[tuple[int, np.ndarray, np.ndarray]] = []
        keep = final and self.keep_final_samples
        nfe, drawn = 0, 0
        self.suite.reset()
        mine = list(range(rank, len(self.chunks), world))
        bar = progress_bar(total=len(self.labels), desc=f"eval samples (step {step})", unit="img", leave=False)
        starts = np.cumsum([0] + [len(c) for c in self.chunks])
        with rng_untouched(device), autocast(self.cfg.precision, device):
            for k in mine:
                for images, y, nfe in generate(  # noqa: B007 (nfe: the last batch's count, read after the loop)
                    pl_module.ema,
                    self.objective,
                    self.sampler,
                    encoder,
                    self.chunks[k],
                    latent_shape,
                    self.guidance,
                    batch_size=len(self.chunks[k]),
                    seed=chunk_seed(self.cfg.seed, k),
                    num_classes=self.data.num_classes,
                    device=device,
                ):
                    with torch.autocast(device.type, enabled=False):  # features always in full precision
                        self.suite.update(images, y, index=np.arange(starts[k], starts[k] + len(y)))
                    drawn += len(y)
                    bar.update(len(y) * world)  # the other processes draw their chunks meanwhile
                    if rank == 0 and k == 0:
                        grid.append((images, y))
                    if keep:
                        kept.append((k, images, np.asarray(y)))
        bar.close()
        values = self.suite.compute()  # collective: every process is here
        per_process = [drawn]
        if world > 1:
            per_process = [None] * world
            torch.distributed.all_gather_object(per_process, drawn)
        if keep:
            self._gather_final_samples(kept, world)
        return {"values": values, "samples_per_process": per_process, "nfe": nfe}, grid

    def _gather_final_samples(self, kept: list[tuple[int, np.ndarray, np.ndarray]], world: int) -> None:
        """Rank 0 gets the whole final set, in chunk order (the same set whatever the process count)."""
        parts = [kept]
        if world > 1:
            parts = [None] * world
            torch.distributed.all_gather_object(parts, kept)
        pieces = sorted((p for part in parts for p in part), key=lambda p: p[0])
        self.final_samples = (
            np.concatenate([p[1] for p in pieces]),
            np.concatenate([p[2] for p in pieces]).astype(np.int64),
        )

    def recipe(self, trainer: L.Trainer, pl_module: L.LightningModule, nfe: int) -> dict[str, Any]:
        return SampleRecipe(
            sampler=self.sampler.describe(),
            guidance=self.guidance,
            encoder=pl_module.encoder.describe(),
            num_samples=len(self.labels),
            seed=int(self.cfg.seed),
            nfe=nfe,
            weights="ema",
            extra={
                "precision": self.cfg.precision,
                "trainer_precision": str(trainer.precision),
                "labels": "interleaved",
                "chunk_size": int(self.cfg.batch_size),
                "reference": self.reference,
            },
        ).as_dict()

    def summary_fields(self) -> dict[str, Any]:
        """What ``summary.json`` gets: the last evaluation's values and its recipe."""
        if not self.history:
            return {"metrics": {}}
        last = self.history[-1]
        return {
            "metrics": metric_values(last),
            "metrics_step": last["step"],
            "metrics_recipe": last.get("recipe"),
            "metrics_lower_is_better": {
                n: True if n == VAL_LOSS else METRICS.get(n).lower_is_better for n in self.names
            },
            "eval_history": f"{EVAL_DIR}/{HISTORY_FILE}",
        }
