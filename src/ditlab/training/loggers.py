"""Experiment loggers selected by the ``logger`` group: csv (default), tensorboard, wandb, none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ditlab.errors import DitlabError


def build_logger(cfg: DictConfig, run_dir: Path, full_cfg: DictConfig) -> Any:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    name = cfg.name
    if name == "none":
        return False
    if name == "csv":
        # One version folder per attempt so a resume never deletes the earlier attempt's CSV.
        return CSVLogger(save_dir=str(run_dir), name="logs", flush_logs_every_n_steps=cfg.get("flush_every", 50))
    if name == "tensorboard":
        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard")
    if name == "wandb":
        from ditlab.training.wandb_logger import build_wandb_logger

        return build_wandb_logger(cfg, run_dir, full_cfg)
    raise DitlabError(f"unknown logger '{name}'; use logger=csv|tensorboard|wandb|none")


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
