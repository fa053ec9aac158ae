"""The end-of-run sample set: class-balanced CFG samples from the EMA weights -> ``samples.npz`` (same
samples, same bytes) and ``samples_grid.png``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ditlab.npz import save_npz
from ditlab.samplers.generate import SampleRecipe, class_balanced_labels, generate
from ditlab.samplers.grid import label_grid, save_grid


def write_samples(cfg, module, objective, sampler, encoder, data, run_dir: Path) -> tuple[SampleRecipe, float]:
    """Class-balanced CFG samples from the EMA weights -> samples.npz and samples_grid.png."""
    fs = cfg.final_samples
    t0 = time.time()
    num_classes = data.num_classes
    labels = class_balanced_labels(num_classes, fs.num_samples)
    images, ys, nfe = [], [], 0
    guidance = OmegaConf.to_container(cfg.guidance, resolve=True)
    ema = module.ema.to(module.device)
    for batch, y, nfe in generate(  # noqa: B007 (nfe: the last batch's count, read after the loop)
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
    """samples.npz (arr_0 uint8 images, arr_1 labels; same samples, same bytes) and samples_grid.png."""
    fs = cfg.final_samples
    save_npz(run_dir / "samples.npz", arr_0=arr, arr_1=lab)
    # One row per class, the first grid_columns samples of each; unconditional: a square of them.
    rows = lab if num_classes else np.arange(len(lab)) // fs.grid_columns
    grid = label_grid(arr, rows, int(fs.grid_columns), int(fs.grid_upscale), None if num_classes else fs.grid_columns)
    save_grid(grid, run_dir / "samples_grid.png")
