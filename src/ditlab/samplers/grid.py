"""Sample grids with one row per requested label, the same layout wherever samples are drawn
(end of training, evaluation during training, ``ditlab-sample``): each row starts with its class
label, and a grid may carry a title line (the evaluation grids say their step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ditlab.atomic import replace_atomically


def label_grid(
    images: np.ndarray,
    labels: np.ndarray,
    columns: int,
    upscale: int = 1,
    max_rows: int | None = None,
    title: str | None = None,
) -> torch.Tensor:
    """uint8 (N, H, W, C) samples -> a (3, H', W') float grid in [0, 1].

    One row per label, in order of first appearance (at most ``max_rows``), holding that label's
    first ``columns`` samples; a label with fewer samples gets blank tiles, so columns stay aligned.
    The label is written left of its row, ``title`` (if given) above the grid. Images with neither
    1 nor 3 channels (latent-like) show their first channel. Only the rows shown are read, so
    ``images`` may be a memory-mapped archive.
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

    grid = make_grid(x, nrow=ncol, padding=2, pad_value=1.0)
    return annotate_grid(grid, [str(label) for label in order], row_pitch=x.shape[-2] + 2, title=title)


def annotate_grid(grid: torch.Tensor, row_names: list[str], row_pitch: int, title: str | None = None) -> torch.Tensor:
    """``grid`` with ``row_names`` in a white margin left of its rows (``row_pitch`` pixels apart) and
    ``title`` in a strip above it; text is drawn in a size that fits the rows."""
    from PIL import Image, ImageDraw

    size = int(min(max(row_pitch * 0.45, 10), 40))
    font = _font(size)
    text_width = max([_text_size(font, name)[0] for name in row_names] + [0])
    margin = text_width + size  # half a font size of white either side of the names
    strip = int(size * 1.6) if title else 0
    page = Image.new("RGB", (grid.shape[2] + margin, grid.shape[1] + strip), "white")
    page.paste(Image.fromarray(grid_to_uint8(grid)), (margin, strip))
    draw = ImageDraw.Draw(page)
    for i, name in enumerate(row_names):
        center_y = strip + 2 + i * row_pitch + (row_pitch - 2) / 2
        draw.text((margin - size / 2, center_y), name, fill="black", font=font, anchor="rm")
    if title:
        draw.text((margin, strip / 2), title, fill="black", font=font, anchor="lm")
    return torch.from_numpy(np.asarray(page).copy()).permute(2, 0, 1).float() / 255.0


def _font(size: int):
    from PIL import ImageFont

    try:  # Pillow's bundled scalable font (needs FreeType); else its small bitmap font
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - top)


def save_grid(grid: torch.Tensor, path: Path) -> None:
    """Write ``label_grid``'s output as a PNG (atomically: never a half-written image)."""
    from torchvision.utils import save_image  # lazy for start-up (see label_grid)

    replace_atomically(Path(path), lambda tmp: save_image(grid, tmp, format="png"))


def grid_to_uint8(grid: torch.Tensor) -> np.ndarray:
    """(3, H, W) grid in [0, 1] -> (H, W, 3) uint8, for loggers that take arrays."""
    return (grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
