"""summary.json: what a user needs to compare runs (also the wandb run summary); docs/outputs.md lists
the fields."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from omegaconf import OmegaConf

from ditlab.atomic import replace_atomically
from ditlab.provenance import git_commit, package_versions
from ditlab.training.compute import training_compute
from ditlab.training.throughput import TrainingThroughput

if TYPE_CHECKING:  # the record it reads
    from ditlab.training.run import Run


def build_summary(
    run: Run,
    trainer: L.Trainer,
    status: str,
    t_start: float,
    fit_seconds: float,
    recipe: dict[str, Any] | None = None,
    sample_seconds: float = 0.0,
) -> dict[str, Any]:
    """What a user needs to compare runs (summary.json and the wandb run summary)."""
    cfg, steps = run.cfg, int(trainer.global_step)
    images_seen = steps * run.module.images_per_step  # global batch x gradient accumulation
    return {
        "status": status,
        "run_name": cfg.run_name,
        "run_dir": str(run.run_dir),
        **run.stats,
        "objective": run.objective.describe(),
        "aux": run.aux.describe(),
        "encoder": run.encoder.describe(),
        "data": run.data.describe(),
        "steps": steps,
        "images_seen": images_seen,
        "train_compute_gflops": training_compute(run.stats["gflops"], images_seen),
        "final_loss": _metric(trainer, "train/loss"),
        "fit_seconds": round(fit_seconds, 2),
        "sample_seconds": round(sample_seconds, 2),
        "wall_seconds": round(time.time() - t_start, 2),
        # Accelerator time of the fit (GPU-hours on GPUs): the x-axis of ditlab-report's cost plot.
        # 6 significant digits: a fixed 6 decimals of an hour would round a short run by up to 1.8 s.
        "device_hours": float(f"{fit_seconds * trainer.world_size / 3600:.6g}"),
        "device_type": run.module.device.type,
        **next((c.summary_fields() for c in trainer.callbacks if isinstance(c, TrainingThroughput)), {}),
        "sampling": recipe,
        "seed": int(cfg.seed),
        # The optimizer and schedule as run (the wandb config holds the same groups).
        "optim": {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("optim", "lr_schedule") if k in cfg},
        "git_commit": git_commit(),
        "compute_plan": run.plan.as_dict() if run.plan is not None else None,
        "resumed_from": str(run.resume.ckpt_path) if run.resume else None,
        "init_from": cfg.get("init_from"),
        **(run.evaluator.summary_fields() if run.evaluator else {"metrics": {}}),
        "torch": torch.__version__,
        "versions": package_versions(),
        "device": str(run.module.device),
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    replace_atomically(run_dir / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)
