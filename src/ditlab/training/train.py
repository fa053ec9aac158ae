"""``train(cfg)``: build every part from its config group, fit, then sample and summarise.

Separate from the ``@hydra.main`` wrapper in :mod:`ditlab.cli` so tests (and notebooks) can call
it with a config composed by Hydra's compose API.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ditlab.auxloss import build_aux
from ditlab.build import build_data, build_encoder, build_model, build_objective, build_sampler
from ditlab import progress
from ditlab.errors import DitlabError
from ditlab.models.accounting import describe_model
from ditlab.models.official import load_initial_weights
from ditlab.provenance import git_commit
from ditlab.report.curves import write_curves
from ditlab.samplers.generate import SampleRecipe, class_balanced_labels, generate
from ditlab.samplers.grid import label_grid, save_grid
from ditlab.sweep.compute import plan_compute
from ditlab.training import run_dir as rd
from ditlab.training.callbacks import build_callbacks
from ditlab.training.eval_callback import build_eval_callback
from ditlab.training.eval_checkpoint import monitored_checkpoint
from ditlab.training.loggers import build_loggers
from ditlab.training.step_checkpoint import StepCheckpoint
from ditlab.training.wandb_logger import publish_summary
from ditlab.training.module import DiffusionModule
from ditlab.training.throughput import TrainingThroughput

log = logging.getLogger("ditlab")


def train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train one run described by ``cfg``; returns the summary written to ``summary.json``.

    ``callbacks`` are added to the ones the config builds (benchmarks time steps with one)."""
    with warnings.catch_warnings():  # scoped to the run: importing ditlab changes no warning filters
        # The EMA copy is deliberately in eval mode; Lightning's warning about it is noise.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        with progress.enabled_if(cfg.get("progress", True)):
            return _train(cfg, callbacks)


def _train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    t_start = time.time()
    _validate(cfg)
    run_dir = Path(cfg.paths.output_dir).resolve()
    ckpt_path = rd.resolve_ckpt_path(cfg.ckpt_path, run_dir)
    is_rank_zero = _global_rank() == 0
    if is_rank_zero:
        rd.prepare_run_dir(run_dir, resuming=ckpt_path is not None, overwrite=bool(cfg.overwrite))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    data = build_data(cfg.data)
    encoder = data.adapt_encoder(build_encoder(cfg.encoder))  # a latent cache checks it and reads posteriors
    latent_channels, latent_side = encoder.latent_shape(data.channels, data.resolution)
    objective = build_objective(cfg.objective)
    sampler = build_sampler(cfg.sampler)
    sampler.check(objective)
    # Sample-quality metrics on the EMA weights (eval group; checked here, before anything is written).
    evaluator = build_eval_callback(cfg, data=data, sampler=sampler, objective=objective, run_dir=run_dir)
    best = monitored_checkpoint(cfg, evaluator, run_dir / rd.CHECKPOINT_DIR)
    if evaluator is not None:  # the final evaluation's images can serve as samples.npz (one sampling pass)
        evaluator.keep_final_samples = bool(cfg.eval.final) and bool(cfg.final_samples.get("reuse_eval", True))
    model = build_model(
        cfg.model,
        cfg.block,
        in_channels=latent_channels,
        input_size=latent_side,
        out_channels=objective.out_channels(latent_channels),
        num_classes=data.num_classes,
    )
    if cfg.get("init_from") and ckpt_path is None:  # fine-tuning: the model and its EMA start from these weights
        load_initial_weights(model, cfg.init_from)
    aux = build_aux(cfg.get("aux"), model, data, encoder)  # REPA: builds its frozen encoder and projector
    stats = describe_model(cfg.model, cfg.block, model)
    stats.update({f"aux_{k}": round(v, 6) for k, v in aux.cost().items()})  # training-only, not in gflops
    log.info("%s: %s params, %.4f Gflops/image (forward, MACs)", stats["model"], f"{stats['params']:,}", stats["gflops"])

    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1))
    # compute.*: steps / evaluations / checkpoints placed by training compute (compute-matched sweeps)
    plan = plan_compute(cfg.get("compute"), stats["gflops"], data.batch_size * accumulate,
                        int(cfg.trainer.max_steps), stats["model"])
    if plan is not None:
        cfg.trainer.max_steps = plan.max_steps  # before config.yaml is written: a resume replans the same
        if evaluator is not None and plan.eval_steps:
            evaluator.every, evaluator.at_steps = 0, set(plan.eval_steps)
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
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=tuple(cfg.optim.betas),
        ema_decay=cfg.ema.decay,
        images_per_step=data.batch_size * accumulate,
        meta=meta,
        aux=aux,
    )
    if cfg.model.get("compile"):  # the trained copy only: the EMA samples a few hundred steps, eagerly
        module.model.compile()

    if is_rank_zero:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (run_dir / "overrides.txt").write_text(" ".join(_overrides()) + "\n")
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
    show_bar = bool(cfg.get("progress", True)) and bool(trainer_kwargs.get("enable_progress_bar", True))
    trainer_kwargs["enable_progress_bar"] = show_bar
    extra = build_callbacks(cfg.get("callbacks"), progress=show_bar, has_logger=bool(loggers))
    all_callbacks = [checkpointing, *extra] + [c for c in (best, evaluator) if c is not None] + list(callbacks or [])
    trainer = L.Trainer(**trainer_kwargs, logger=loggers or False, callbacks=all_callbacks, default_root_dir=run_dir)
    for logger in trainer.loggers:
        logger.log_hyperparams({f"model/{k}": v for k, v in stats.items()})
    t_fit = time.time()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.time() - t_fit
    # ModelCheckpoint saves on its step interval only; the final state always lands in last.ckpt.
    # (Called on every rank: saving is collective under sharded strategies.)
    trainer.save_checkpoint(run_dir / rd.CHECKPOINT_DIR / rd.LAST_CKPT, weights_only=False)  # full: optimizer + loops, to resume
    if not trainer.is_global_zero:
        return {}

    rd.merge_csv_logs(run_dir)
    write_curves(run_dir, images_per_step=data.batch_size * accumulate)  # loss + eval metrics vs steps
    if evaluator is not None and evaluator.final_samples is not None:
        # The final evaluation's images: sampled once, recorded with exactly the recipe that drew them.
        save_samples(cfg, *evaluator.final_samples, data.num_classes, run_dir)
        recipe, sample_seconds = evaluator.history[-1]["recipe"], 0.0
    else:
        recipe, sample_seconds = write_samples(cfg, module, objective, sampler, encoder, data, run_dir)
        recipe = recipe.as_dict()
    summary = {
        "status": "finished",
        "run_name": cfg.run_name,
        "run_dir": str(run_dir),
        **stats,
        "objective": objective.describe(),
        "aux": aux.describe(),
        "encoder": encoder.describe(),
        "data": data.describe(),
        "steps": int(trainer.global_step),
        "images_seen": int(trainer.global_step) * data.batch_size * accumulate,
        "train_compute_gflops": stats["gflops"] * 3 * int(trainer.global_step) * data.batch_size * accumulate,
        "final_loss": _metric(trainer, "train/loss"),
        "fit_seconds": round(fit_seconds, 2),
        "sample_seconds": round(sample_seconds, 2),
        "wall_seconds": round(time.time() - t_start, 2),
        # Accelerator time of the fit (GPU-hours on GPUs): the x-axis of ditlab-report's cost plot.
        "device_hours": round(fit_seconds * trainer.world_size / 3600, 6),
        "device_type": module.device.type,
        **next((c.summary_fields() for c in trainer.callbacks if isinstance(c, TrainingThroughput)), {}),
        "sampling": recipe,
        "seed": int(cfg.seed),
        "git_commit": git_commit(),
        "compute_plan": plan.as_dict() if plan is not None else None,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "init_from": cfg.get("init_from"),
        **(evaluator.summary_fields() if evaluator else {"metrics": {}}),
        "torch": torch.__version__,
        "device": str(module.device),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    publish_summary(trainer.loggers, summary)  # wandb: run summary = summary.json (Gflops, metrics, compute)
    log.info("run finished: %s", run_dir)
    return summary


def write_samples(cfg, module, objective, sampler, encoder, data, run_dir: Path) -> tuple[SampleRecipe, float]:
    """Class-balanced CFG samples from the EMA weights -> samples.npz and samples_grid.png."""
    fs = cfg.final_samples
    t0 = time.time()
    num_classes = data.num_classes
    labels = class_balanced_labels(num_classes, fs.num_samples)
    images, ys, nfe = [], [], 0
    guidance = OmegaConf.to_container(cfg.guidance, resolve=True)
    ema = module.ema.to(module.device)
    for batch, y, nfe in generate(
        ema,
        objective,
        sampler,
        encoder,
        labels,
        encoder.latent_shape(data.channels, data.resolution),
        guidance,
        batch_size=fs.batch_size,
        seed=int(cfg.seed),
        num_classes=num_classes,
        device=module.device,
        progress="final samples",
    ):
        images.append(batch)
        ys.append(y)
    arr = np.concatenate(images)
    lab = np.concatenate(ys).astype(np.int64)
    save_samples(cfg, arr, lab, num_classes, run_dir)
    recipe = SampleRecipe(
        sampler=sampler.describe(),
        guidance=guidance,
        encoder=encoder.describe(),
        num_samples=len(lab),
        seed=int(cfg.seed),
        nfe=nfe,
        extra={"precision": str(cfg.trainer.precision)},
    )
    return recipe, time.time() - t0


def save_samples(cfg: DictConfig, arr: np.ndarray, lab: np.ndarray, num_classes: int, run_dir: Path) -> None:
    """samples.npz (arr_0 uint8 images, arr_1 labels) and samples_grid.png."""
    fs = cfg.final_samples
    np.savez(run_dir / "samples.npz", arr_0=arr, arr_1=lab)
    # One row per class, the first grid_columns samples of each; unconditional: a square of them.
    rows = lab if num_classes else np.arange(len(lab)) // fs.grid_columns
    grid = label_grid(arr, rows, int(fs.grid_columns), int(fs.grid_upscale), None if num_classes else fs.grid_columns)
    save_grid(grid, run_dir / "samples_grid.png")


def _validate(cfg: DictConfig) -> None:
    if cfg.trainer.max_steps is None or int(cfg.trainer.max_steps) <= 0:
        raise DitlabError(f"trainer.max_steps must be a positive number of steps, got {cfg.trainer.max_steps}")
    if int(cfg.data.batch_size) <= 0:
        raise DitlabError(f"data.batch_size must be positive, got {cfg.data.batch_size}")
    if int(cfg.final_samples.num_samples) <= 0 or int(cfg.final_samples.batch_size) <= 0:
        raise DitlabError("final_samples.num_samples and final_samples.batch_size must be positive")


def _global_rank() -> int:
    # Set by Lightning from RANK / LOCAL_RANK / SLURM_PROCID before the process group exists, so
    # processes that Lightning or SLURM started for DDP know they are not rank 0.
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []

