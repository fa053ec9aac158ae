"""What an evaluation during training leaves behind (:mod:`ditlab.training.eval_callback`).

Rank 0 appends one row per evaluation to ``eval/metrics.jsonl``, saves the sample grid as
``eval/grid_step<N>.png``, hands the scalars (and the grid) to every logger at the evaluation's step
and writes one log line. Computing the values is the callback's part; this module only records them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig

from ditlab.atomic import replace_atomically
from ditlab.samplers.grid import grid_to_uint8, label_grid, save_grid

log = logging.getLogger("ditlab")
HISTORY_FILE = "metrics.jsonl"
EVAL_DIR = "eval"


def metric_values(row: dict[str, Any]) -> dict[str, float]:
    """The metric values of one evaluation's row: its float fields but the time it took."""
    return {k: v for k, v in row.items() if isinstance(v, float) and k != "seconds"}


def logged_scalars(row: dict[str, Any], num_samples: int, guidance_scale: float) -> dict[str, float]:
    """The ``eval/<name>`` values of one evaluation's row, as the loggers and Lightning get them."""
    scalars = {f"eval/{k}": float(v) for k, v in metric_values(row).items()}
    if "recipe" in row:  # samples were drawn (val_loss alone draws none)
        scalars.update(
            {
                "eval/nfe": float(row["recipe"]["nfe"]),
                "eval/num_samples": float(num_samples),
                "eval/cfg_scale": float(guidance_scale),
            }
        )
    scalars["eval/seconds"] = float(row["seconds"])
    return scalars


def record_evaluation(
    trainer: L.Trainer,
    run_dir: Path,
    eval_cfg: DictConfig,
    row: dict[str, Any],
    scalars: dict[str, float],
    grid: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Rank 0: the history row, the grid PNG, the loggers' values and image, the log line."""
    out = Path(run_dir) / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    with open(out / HISTORY_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")
    step, scale = row["step"], float(eval_cfg.guidance_scale)
    image = save_eval_grid(grid, out / f"grid_step{step:07d}.png", eval_cfg, title=f"step {step}")
    for logger in trainer.loggers:
        logger.log_metrics(scalars, step=step)
        if image is not None and hasattr(logger, "log_image"):  # wandb
            logger.log_image(key="eval/samples", images=[image], step=step, caption=[f"step {step}, EMA, cfg {scale}"])
        elif image is not None and hasattr(getattr(logger, "experiment", None), "add_image"):  # tensorboard
            logger.experiment.add_image("eval/samples", image, step, dataformats="HWC")
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metric_values(row).items())
    drawn = (
        f"{int(eval_cfg.num_samples)} samples, EMA, nfe {row['recipe']['nfe']}"
        if "recipe" in row
        else "EMA, no samples"
    )
    log.info("eval at step %d (%s): %s", step, drawn, shown)


def save_eval_grid(
    grid: list[tuple[np.ndarray, np.ndarray]], path: Path, eval_cfg: DictConfig, title: str
) -> np.ndarray | None:
    """One row per class (up to eval.grid_per_class samples each) from the first chunk; uint8 HWC for the loggers."""
    if not grid:
        return None
    image = label_grid(
        np.concatenate([g[0] for g in grid]),
        np.concatenate([g[1] for g in grid]),
        int(eval_cfg.grid_per_class),
        int(eval_cfg.grid_upscale),
        title=title,
    )
    save_grid(image, path)
    return grid_to_uint8(image)


def mark_last_row_final(run_dir: Path, row: dict[str, Any]) -> None:
    """Rewrite the history's last line as ``row`` (now marked final): training stopped at that evaluation."""
    history = Path(run_dir) / EVAL_DIR / HISTORY_FILE
    if history.exists():
        rows = [*history.read_text().splitlines()[:-1], json.dumps(row)]
        replace_atomically(history, lambda tmp: tmp.write_text("\n".join(rows) + "\n"))
