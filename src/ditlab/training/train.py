"""``train(cfg)``: one run, as a sequence of steps (see :func:`train`).

Separate from the ``@hydra.main`` wrapper in :mod:`ditlab.cli` so tests (and notebooks) can call
it with a config composed by Hydra's compose API. What a run guarantees (exact resume, the lock,
preemption, the divergence guard) is described in docs/runs.md.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ditlab import progress
from ditlab.auxloss import build_aux
from ditlab.build import (
    build_data,
    build_encoder,
    build_lr_schedule,
    build_model_for,
    build_objective,
    build_optimizer,
    build_sampler,
)
from ditlab.checkpoints import run_dir as rd
from ditlab.checkpoints.checkpoint_file import load_initial_weights
from ditlab.checkpoints.checkpoint_io import AtomicCheckpointIO
from ditlab.checkpoints.disk_space import check_run_space
from ditlab.checkpoints.resume import ResumePlan, check_fits, plan_resume, record_resume
from ditlab.checkpoints.run_attempt import RunAttempt, run_attempt
from ditlab.checkpoints.step_checkpoint import StepCheckpoint
from ditlab.models.accounting import describe_model
from ditlab.schema import check_config
from ditlab.training.callbacks import build_callbacks
from ditlab.training.compute import plan_compute
from ditlab.training.curves import write_curves
from ditlab.training.eval_callback import build_eval_callback
from ditlab.training.eval_checkpoint import monitored_checkpoint
from ditlab.training.final_samples import save_samples, write_samples
from ditlab.training.loggers import build_loggers
from ditlab.training.module import DiffusionModule
from ditlab.training.preemption import Preemption, RunInterrupted
from ditlab.training.quiet import quiet_run
from ditlab.training.run import Run
from ditlab.training.slurm_layout import check_slurm_layout
from ditlab.training.summary import build_summary, write_summary
from ditlab.training.wandb_logger import publish_summary

if TYPE_CHECKING:  # types in the build steps' signatures only
    from ditlab.auxloss.base import AuxLoss
    from ditlab.data.base import ImageDataModule
    from ditlab.encoders.base import LatentEncoder
    from ditlab.models.dit import DiT
    from ditlab.objectives.base import Objective
    from ditlab.training.compute import ComputePlan
    from ditlab.training.eval_callback import EvalCallback

log = logging.getLogger("ditlab")


def train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train one run described by ``cfg``; returns the summary written to ``summary.json``.

    ``callbacks`` are added to the ones the config builds (benchmarks time steps with one)."""
    with warnings.catch_warnings():  # scoped to the run: importing ditlab changes no warning filters
        # The EMA copy is deliberately in eval mode; Lightning's warning about it is noise.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        # A resumed run writes into its own non-empty checkpoint folder by design.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        with progress.enabled_if(cfg.get("progress", True)), quiet_run():  # start-up noise off, ditlab's lines on
            return _train(cfg, callbacks)


def _train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """The steps of a run."""
    t_start = time.time()
    rank_zero = _global_rank() == 0
    run_dir = Path(cfg.paths.output_dir).resolve()
    # 1. the run directory belongs to this process group until the end; a launch that fails before
    # training starts leaves it as it was (checkpoints/run_attempt.py)
    with run_attempt(run_dir, takeover=bool(cfg.get("takeover_lock")), rank_zero=rank_zero) as attempt:
        run = build_run(cfg, [*(callbacks or []), attempt])  # 2. validate everything and build every part
        if rank_zero:
            check_run_space(run.run_dir, run.module)  # a full disk: refused before anything is written
            start_run_dir(run, attempt)  # 3. config.yaml (new run) or one resume entry
        trainer, fit_seconds = fit(run)  # 4. raises RunInterrupted after saving, on a signal
        if not trainer.is_global_zero:
            return {}
        rd.merge_csv_logs(run.run_dir)
        write_curves(run.run_dir, images_per_step=run.module.images_per_step)  # loss + eval metrics vs steps
        recipe, sample_seconds = final_samples(run)  # 5. samples from the EMA weights
        summary = build_summary(run, trainer, "finished", t_start, fit_seconds, recipe, sample_seconds)
        write_summary(run.run_dir, summary)  # 6. the summary, also the wandb run summary
        publish_summary(trainer.loggers, summary)
    log.info("run finished: %s", run.run_dir)
    return summary


def build_run(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> Run:
    """Resolve the run's config (a resume continues with the checkpoint's), check it, build the parts."""
    run_dir = Path(cfg.paths.output_dir).resolve()
    resume_point = rd.resolve_ckpt_path(cfg.ckpt_path, run_dir)  # last/auto: the newest complete checkpoint
    resume = plan_resume(cfg, *resume_point) if resume_point is not None else None
    if resume is not None:
        cfg = resume.config
    _validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    data = build_data(cfg.data)
    encoder = data.adapt_encoder(build_encoder(cfg.encoder))  # a latent cache checks it and reads posteriors
    objective = build_objective(cfg.objective)
    sampler = build_sampler(cfg.sampler)
    sampler.check(objective)
    # Sample-quality metrics on the EMA weights (eval group; checked here, before anything is written).
    evaluator = build_eval_callback(cfg, data=data, sampler=sampler, objective=objective, run_dir=run_dir)
    best = monitored_checkpoint(cfg, evaluator, run_dir / rd.CHECKPOINT_DIR)
    if evaluator is not None:  # the final evaluation's images can serve as samples.npz (one sampling pass)
        evaluator.keep_final_samples = bool(cfg.eval.final) and bool(cfg.final_samples.get("reuse_eval", True))
    model, stats, aux = _build_model(cfg, data, encoder, objective, resume)
    plan = _plan_compute(cfg, data, stats, evaluator)
    module = _build_module(cfg, model, data, encoder, objective, stats, aux)  # after the plan: it sets max_steps
    return Run(
        cfg,
        run_dir,
        resume,
        data,
        encoder,
        objective,
        sampler,
        evaluator,
        best,
        aux,
        module,
        stats,
        plan,
        list(callbacks or []),
    )


def _images_per_step(cfg: DictConfig, data: ImageDataModule) -> int:
    return data.batch_size * int(cfg.trainer.get("accumulate_grad_batches", 1))


def _build_model(
    cfg: DictConfig, data: ImageDataModule, encoder: LatentEncoder, objective: Objective, resume: ResumePlan | None
) -> tuple[DiT, dict[str, Any], AuxLoss]:
    """The model with its starting weights (checked against a resume, or ``init_from``), its stats, the aux loss."""
    model = build_model_for(cfg, data, encoder, objective)
    if resume is not None:
        check_fits(resume, model)
    elif cfg.get("init_from"):  # fine-tuning: the model and its EMA start from these weights
        load_initial_weights(model, cfg.init_from)
    stats = describe_model(cfg.model, cfg.block, model)
    aux = build_aux(cfg.get("aux"), model, data, encoder)  # REPA: builds its frozen encoder and projector
    stats.update({f"aux_{k}": round(v, 6) for k, v in aux.cost().items()})  # training-only, not in gflops
    log.info(
        "%s: %s params, %.4f Gflops/image (forward, MACs)", stats["model"], f"{stats['params']:,}", stats["gflops"]
    )
    return model, stats, aux


def _plan_compute(
    cfg: DictConfig, data: ImageDataModule, stats: dict[str, Any], evaluator: EvalCallback | None
) -> ComputePlan | None:
    """compute.*: steps / evaluations / checkpoints placed by training compute (compute-matched sweeps)."""
    plan = plan_compute(
        cfg.get("compute"), stats["gflops"], _images_per_step(cfg, data), int(cfg.trainer.max_steps), stats["model"]
    )
    if plan is not None:
        cfg.trainer.max_steps = plan.max_steps  # before config.yaml is written: a resume replans the same
        if evaluator is not None and plan.eval_steps:
            evaluator.every, evaluator.at_steps = 0, set(plan.eval_steps)
    return plan


def _build_module(
    cfg: DictConfig,
    model: DiT,
    data: ImageDataModule,
    encoder: LatentEncoder,
    objective: Objective,
    stats: dict[str, Any],
    aux: AuxLoss,
) -> DiffusionModule:
    """The LightningModule; ``meta`` (the resolved config and the parts' descriptions) goes into every checkpoint."""
    meta = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "model_stats": stats,
        "objective": objective.describe(),
        "encoder": encoder.describe(),
        "data": data.describe(),
    }
    module = DiffusionModule(
        model,
        objective,
        encoder,
        lr=float(cfg.optim.lr),
        optimizer=build_optimizer(cfg.optim),
        lr_schedule=build_lr_schedule(cfg.get("lr_schedule")),  # after the compute plan: it may set max_steps
        ema_decay=cfg.ema.decay,
        images_per_step=_images_per_step(cfg, data),
        meta=meta,
        aux=aux,
        seed=int(cfg.seed),
        max_loss=float(cfg.divergence.max_loss),
    )
    if cfg.model.get("compile"):  # the trained copy only: the EMA samples a few hundred steps, eagerly
        module.model.compile()
    return module


def start_run_dir(run: Run, attempt: RunAttempt) -> None:
    """Refuse or set aside an earlier run (under the lock), then record how this attempt started."""
    resuming, overwrite = run.resume is not None, bool(run.cfg.overwrite)
    rd.prepare_run_dir(run.run_dir, resuming=resuming, overwrite=overwrite, set_aside=attempt.set_aside)
    if run.resume is not None and (run.run_dir / "config.yaml").exists():
        record_resume(run.run_dir, run.resume, _overrides())  # the run's config.yaml stays its history
        return
    (run.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(run.cfg, resolve=True))
    (run.run_dir / "overrides.txt").write_text(" ".join(_overrides()) + "\n")


def make_trainer(run: Run, preemption: Preemption) -> L.Trainer:
    cfg, run_dir = run.cfg, run.run_dir
    plan = run.plan
    checkpointing = StepCheckpoint(
        plan.checkpoint_steps if plan is not None and plan.checkpoint_steps else None,
        dirpath=run_dir / rd.CHECKPOINT_DIR,
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint.every_n_steps,
        save_top_k=cfg.checkpoint.keep,
        save_last=True,
    )
    loggers = build_loggers(cfg.get("logger"), run_dir, cfg)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    show_bar = (
        bool(cfg.get("progress", True))
        and not progress.disabled_by_environment()
        and bool(trainer_kwargs.get("enable_progress_bar", True))
    )
    trainer_kwargs["enable_progress_bar"] = show_bar
    extra = build_callbacks(cfg.get("callbacks"), progress=show_bar, has_logger=bool(loggers))
    # Early stopping after the evaluator: at an evaluation step it must read the eval/* value just logged.
    stoppers = [c for c in extra if isinstance(c, EarlyStopping)]
    callbacks = [checkpointing, *(c for c in extra if c not in stoppers)]
    callbacks += [c for c in (run.best, run.evaluator) if c is not None] + stoppers + run.callbacks
    callbacks.append(preemption)
    trainer = L.Trainer(
        **trainer_kwargs,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
    )
    for logger in trainer.loggers:
        logger.log_hyperparams({f"model/{k}": v for k, v in run.stats.items()})
    return trainer


def fit(run: Run) -> tuple[L.Trainer, float]:
    """Fit, then save the final state in full; after a signal: save, summarise as interrupted, exit."""
    last = run.run_dir / rd.CHECKPOINT_DIR / rd.LAST_CKPT
    ckpt_path = run.resume.ckpt_path if run.resume else None
    t_fit = time.time()
    with Preemption() as preemption:  # signals only recorded from here on; the loop stops at a step boundary
        trainer = make_trainer(run, preemption)
        try:
            trainer.fit(run.module, datamodule=run.data, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:  # raised by Lightning after the step the processes agreed to stop at
            preemption.stopped_by = preemption.stopped_by or preemption.signum or signal.SIGTERM
        # ModelCheckpoint saves on its step interval only; the final state always lands in last.ckpt.
        # (Called on every rank: saving is collective under sharded strategies.)
        trainer.save_checkpoint(last, weights_only=False)  # full: optimizer + loops, to resume
    if preemption.stopped_by is None:
        return trainer, time.time() - t_fit
    if trainer.is_global_zero:
        rd.merge_csv_logs(run.run_dir)
        write_summary(run.run_dir, build_summary(run, trainer, "interrupted", t_fit, time.time() - t_fit))
        log.warning(
            "interrupted at step %d (checkpoint %s); continue with: %s",
            trainer.global_step,
            last,
            rd.rerun_command("ckpt_path=last"),
        )
        preemption.requeue()
    raise RunInterrupted(preemption.stopped_by, str(last))


def final_samples(run: Run) -> tuple[dict[str, Any], float]:
    """samples.npz: the final evaluation's images when it kept them (one sampling pass), else fresh ones."""
    evaluator = run.evaluator
    if evaluator is not None and evaluator.final_samples is not None:
        # The final evaluation's images: sampled once, recorded with exactly the recipe that drew them.
        save_samples(run.cfg, *evaluator.final_samples, run.data.num_classes, run.run_dir)
        return evaluator.history[-1]["recipe"], 0.0
    recipe, seconds = write_samples(run.cfg, run.module, run.objective, run.sampler, run.encoder, run.data, run.run_dir)
    return recipe.as_dict(), seconds


def _validate(cfg: DictConfig) -> None:
    """Every value Lightning or torch would otherwise reject with a traceback (or accept silently), in one
    line each: the types and ranges of :mod:`ditlab.schema`, which the console script also checks when it
    composes the command line; here for resumed configs, sweep jobs and configs composed in Python."""
    check_config("train", cfg)
    check_slurm_layout(cfg.trainer)  # sbatch options vs num_nodes x devices: one line, not Lightning's trace


def _global_rank() -> int:
    # Set by Lightning from RANK / LOCAL_RANK / SLURM_PROCID before the process group exists, so
    # processes that Lightning or SLURM started for DDP know they are not rank 0.
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []
