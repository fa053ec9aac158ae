"""Weights & Biases logger: mode from config or environment (online / offline / disabled)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def build_wandb_logger(cfg: DictConfig, run_dir: Path, full_cfg: DictConfig) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    mode = cfg.get("mode") or os.environ.get("WANDB_MODE") or "online"
    tags = list(cfg.get("tags") or [])
    return WandbLogger(
        project=cfg.project,
        name=full_cfg.run_name,
        group=cfg.get("group"),
        tags=tags,
        save_dir=str(run_dir),
        mode=mode,
        config=OmegaConf.to_container(full_cfg, resolve=True),
    )
