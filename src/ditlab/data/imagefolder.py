"""Images in an ImageNet-train layout: ``root/<class folder>/<image>``, one folder per class.

Labels are positions of the class folders in sorted order (torchvision's ``ImageFolder``, as DiT).
Each image is converted to RGB (grayscale, RGBA, CMYK, palette), ADM-centre-cropped to
``resolution`` and, for training, flipped horizontally with probability 0.5.

An unreadable image never raises inside a worker process (the message would arrive wrapped in a
traceback): the item carries its path, and the main process either stops the run naming it
(default) or, with ``skip_corrupt: true``, logs and counts it and trains on a readable neighbour.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from ditlab.data.base import DATASETS, ImageDataModule
from ditlab.data.sharding import sharded_train_loader
from ditlab.data.transforms import adm_center_crop, to_model_range
from ditlab.errors import DitlabError
from ditlab.resumable_loader import item_generator

log = logging.getLogger("ditlab")
# What PIL raises for a truncated, corrupt or unsupported file (UnidentifiedImageError is an OSError).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
MAX_SUBSTITUTES = 64  # readable neighbours tried in place of an unreadable image


def read_rgb(path: str) -> tuple[Image.Image | None, str]:
    """(RGB image, "") or (None, why it could not be read)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), ""
    except READ_ERRORS as e:
        return None, f"{type(e).__name__}: {e}".strip().splitlines()[0][:200]


def class_folders(root: str | Path) -> list[str]:
    """Sorted class sub-folder names: the label of a folder is its position here. Hidden folders
    (``.ipynb_checkpoints``, ``.git``) are not classes."""
    return sorted(d.name for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith("."))


class ImageFolderDataset(ImageFolder):
    """Items ``(image (3, R, R) in [-1, 1], label, index, bad_path, bad_reason)``; bad_path is "" when readable.

    ``substitute=True`` (training) replaces an unreadable image by the next readable one;
    ``substitute=False`` (extraction) returns zeros and label -1 for it.
    """

    def __init__(self, root: str, resolution: int, random_flip: bool, substitute: bool):
        try:
            super().__init__(root)
        except FileNotFoundError as e:
            raise DitlabError(f"data.root={root}: {str(e).splitlines()[0]}") from None
        self.resolution = resolution
        self.random_flip = random_flip
        self.substitute = substitute

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = class_folders(directory)  # the data module counts classes with the same function
        if not classes:
            raise FileNotFoundError(f"no class folders in {directory}")
        return classes, {name: i for i, name in enumerate(classes)}

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image, reason = read_rgb(path)
        bad_path = "" if image is not None else path
        if image is None:
            if not self.substitute:
                return torch.zeros(3, self.resolution, self.resolution), -1, index, bad_path, reason
            for step in range(1, MAX_SUBSTITUTES + 1):
                other, label = self.samples[(index + step) % len(self.samples)]
                image, _ = read_rgb(other)
                if image is not None:
                    break
            else:
                raise DitlabError(f"none of the {MAX_SUBSTITUTES} images after {path} is readable; check data.root")
        x = to_model_range(adm_center_crop(image, self.resolution))
        if self.random_flip and torch.rand((), generator=item_generator(index)) < 0.5:
            x = x.flip(-1)
        return x, label, index, bad_path, reason


class CorruptImages:
    """Stop at the first unreadable image (default) or log and count each one once."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.skipped: set[str] = set()

    def report(self, path: str, reason: str) -> None:
        if not self.skip:
            raise DitlabError(
                f"cannot read image {path} ({reason}); fix or remove it, or set data.skip_corrupt=true to skip "
                "unreadable images"
            )
        if path not in self.skipped:
            self.skipped.add(path)
            log.warning("skipped unreadable image %s (%s); %d skipped so far", path, reason, len(self.skipped))


def resolve_num_classes(requested: int | None, found: int, where: str) -> int:
    """null -> the data's class count; 0 -> unconditional; anything else must match the data."""
    if requested is None:
        return found
    if int(requested) not in (0, found):
        raise DitlabError(
            f"data.num_classes={requested} but {where} has {found} classes; set data.num_classes=null "
            "(use the data's) or 0 (unconditional)"
        )
    return int(requested)


@DATASETS.register("imagefolder")
class ImageFolderDataModule(ImageDataModule):
    name = "imagefolder"
    channels = 3

    def __init__(
        self,
        root: str,
        resolution: int = 256,
        batch_size: int = 256,
        num_workers: int = 4,
        random_flip: bool = True,
        skip_corrupt: bool = False,
        num_classes: int | None = None,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers)
        if root in (None, "", "???"):
            raise DitlabError("data.root is not set: pass the image folder, e.g. data.root=/data/imagenet/train")
        self.root = Path(str(root)).expanduser().resolve()
        if not self.root.is_dir():
            raise DitlabError(
                f"data.root={root} is not a directory; point it at a folder with one sub-folder per class"
            )
        self.classes = class_folders(self.root)
        if not self.classes:
            raise DitlabError(f"data.root={root} has no class sub-folders (expected root/<class>/<image>)")
        self.num_classes = resolve_num_classes(num_classes, len(self.classes), f"data.root={root}")
        self.resolution = int(resolution)
        self.random_flip = bool(random_flip)
        self.seed = int(seed)
        self.corrupt = CorruptImages(bool(skip_corrupt))
        self.dataset: ImageFolderDataset | None = None

    def make_dataset(self, random_flip: bool, substitute: bool) -> ImageFolderDataset:
        return ImageFolderDataset(str(self.root), self.resolution, random_flip, substitute)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = self.make_dataset(self.random_flip, substitute=True)

    def train_dataloader(self):
        self.setup()
        return sharded_train_loader(self.dataset, self, self.seed)

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        x, y, _, bad_paths, reasons = batch
        for path, reason in zip(bad_paths, reasons):
            if path:
                self.corrupt.report(path, reason)
        return x, y

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "root": str(self.root),
            "num_images": len(self.dataset) if self.dataset is not None else None,
            "random_flip": self.random_flip,
            "skip_corrupt": self.corrupt.skip,
            "skipped_corrupt": len(self.corrupt.skipped),  # seen by this process
        }
