"""Sample grids with one row per requested label, the same layout wherever samples are drawn
(end of training, evaluation during training, ``ditlab-sample``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ditlab.atomic import replace_atomically


def label_grid(
    images: np.ndarray, labels: np.ndarray, columns: int, upscale: int = 1, max_rows: int | None = None
) -> torch.Tensor:
    """uint8 (N, H, W, C) samples -> a (3, H', W') float grid in [0, 1].

    One row per label, in order of first appearance (at most ``max_rows``), holding that label's
    first ``columns`` samples; a label with fewer samples gets blank tiles, so columns stay aligned.
    Images with neither 1 nor 3 channels (latent-like) show their first channel. Only the rows
    shown are read, so ``images`` may be a memory-mapped archive.
    """
    order = list(dict.fromkeys(np.asarray(labels).tolist()))[:max_rows]
    rows = [np.where(labels == label)[0][:columns] for label in order]
    ncol = max(len(r) for r in rows)
    x = torch.from_numpy(np.asarray(images[np.concatenate(rows)])).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[1] not in (1, 3):
        x = x[:, :1]
    blank = torch.ones_like(x[:1])
    tiles, start = [], 0
    for r in rows:
        tiles += [x[start : start + len(r)], blank.expand(ncol - len(r), -1, -1, -1)]
        start += len(r)
    x = torch.cat(tiles)
    if upscale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=int(upscale), mode="nearest")
    from torchvision.utils import make_grid  # lazy for start-up: torchvision is slow to import

    return make_grid(x, nrow=ncol, padding=2, pad_value=1.0)


def save_grid(grid: torch.Tensor, path: Path) -> None:
    """Write ``label_grid``'s output as a PNG (atomically: never a half-written image)."""
    from torchvision.utils import save_image  # lazy for start-up (see label_grid)

    replace_atomically(Path(path), lambda tmp: save_image(grid, tmp, format="png"))


def grid_to_uint8(grid: torch.Tensor) -> np.ndarray:
    """(3, H, W) grid in [0, 1] -> (H, W, 3) uint8, for loggers that take arrays."""
    return (grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
