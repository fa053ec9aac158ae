"""Experiment loggers: the ``logger`` group selects any number of them (``logger=[csv,wandb]``).

Each option is one YAML file keyed ``# @package logger.<name>``, so several compose side by side.
An entry is built in one of two ways:

* ``name: <registered>`` (+ ``module:`` to import a plugin first): a builder in :data:`LOGGERS`,
  called as ``builder(cfg, run_dir, full_cfg)`` for loggers that need the run (csv, tensorboard,
  wandb). A new one is one Python file with ``@LOGGERS.register("mine")`` and one YAML file.
* ``_target_: some.Logger`` with its keyword arguments: any Lightning logger, instantiated by Hydra
  (``save_dir: ${paths.output_dir}`` puts its files in the run directory); no Python needed.

``logger=none`` (or ``logger=[]``) logs nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ditlab.errors import DitlabError
from ditlab.extras import require
from ditlab.registry import Registry

LoggerBuilder = Callable[[DictConfig, Path, DictConfig], Any]
LOGGERS: Registry[LoggerBuilder] = Registry("logger", "logger")


@LOGGERS.register("csv")
def csv_logger(cfg: DictConfig, run_dir: Path, full_cfg: DictConfig) -> Any:
    from lightning.pytorch.loggers import CSVLogger  # lazy: only the loggers selected are loaded

    # One version folder per attempt so a resume never deletes the earlier attempt's CSV; the
    # attempts are merged into <run>/metrics.csv at the end.
    return CSVLogger(save_dir=str(run_dir), name="logs", flush_logs_every_n_steps=cfg.get("flush_every", 50))


@LOGGERS.register("tensorboard")
def tensorboard_logger(cfg: DictConfig, run_dir: Path, full_cfg: DictConfig) -> Any:
    require("tensorboard", "logger=tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger  # lazy: tensorboard is optional

    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard")


@LOGGERS.register("wandb")
def wandb_logger(cfg: DictConfig, run_dir: Path, full_cfg: DictConfig) -> Any:
    require("wandb", "logger=wandb")
    from ditlab.training.wandb_logger import build_wandb_logger  # lazy: wandb is optional

    return build_wandb_logger(cfg, run_dir, full_cfg)


def build_loggers(cfg: DictConfig | None, run_dir: Path, full_cfg: DictConfig) -> list[Any]:
    """Every logger selected in the ``logger`` group, in the order they were composed."""
    from hydra.errors import InstantiationException  # lazy: only _target_ entries need Hydra's instantiate
    from hydra.utils import instantiate

    loggers = []
    for key, entry in (cfg or {}).items():
        if not isinstance(entry, DictConfig):
            raise DitlabError(f"logger.{key} must be a logger config (name: or _target_:), got {entry!r}")
        if "_target_" in entry:
            try:
                loggers.append(instantiate(entry))
            except InstantiationException as e:
                raise DitlabError(f"logger.{key} could not be built: {_first_line(e.__cause__ or e)}") from None
            continue
        if "name" not in entry:
            raise DitlabError(f"logger.{key} names neither a registered logger (name:) nor a class (_target_:)")
        # a builder reads its whole entry (its options and ditlab's), so it gets the entry, not keywords
        loggers.append(LOGGERS.build(str(entry.name), entry, run_dir, full_cfg, module=entry.get("module")))
    return loggers


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
