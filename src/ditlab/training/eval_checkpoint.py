"""Keeping the best checkpoints by an evaluation metric (``checkpoint.monitor=eval/<metric>``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from ditlab.errors import DitlabError
from ditlab.training.eval_callback import EvalCallback


def monitored_checkpoint(cfg: DictConfig, evaluator: EvalCallback | None, dirpath: Path) -> L.Callback | None:
    """``checkpoint.monitor=eval/<metric>``: a second ModelCheckpoint that keeps the best checkpoints,
    saving exactly at the evaluation steps (the un-monitored one keeps last/periodic saves). Saving on
    another interval would rank by a stale value, and before the first evaluation Lightning would
    silently defer every save of a checkpoint that monitors a key not logged yet."""
    monitor = cfg.checkpoint.get("monitor")
    if not monitor:
        return None
    metric = str(monitor).removeprefix("eval/")
    if evaluator is None or not evaluator.every or metric.removesuffix("_std") not in evaluator.names:
        raise DitlabError(
            f"checkpoint.monitor={monitor} needs an evaluation every few steps that computes it; set "
            f"eval.every_n_steps=N and add {metric} to eval.metrics"
        )
    mode = cfg.checkpoint.get("monitor_mode", "min")
    if mode not in ("min", "max"):
        raise DitlabError(f"checkpoint.monitor_mode={mode} must be min or max")
    return L.pytorch.callbacks.ModelCheckpoint(
        dirpath=dirpath,
        filename=f"best-step{{step:07d}}-{metric}{{{monitor}:.4g}}",
        auto_insert_metric_name=False,
        monitor=str(monitor),
        mode=mode,
        save_top_k=int(cfg.checkpoint.get("monitor_keep", 1)),
        every_n_train_steps=evaluator.every,
        save_last=False,
    )
