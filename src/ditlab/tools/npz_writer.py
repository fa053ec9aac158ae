"""Write an ADM-evaluator ``.npz`` (``arr_0`` uint8 N×H×W×C, ``arr_1`` int64 labels) batch by batch.

Each batch goes straight into memory-mapped ``.npy`` files next to the target; ``close()`` then
stores them uncompressed into the zip (``np.load`` reads it like ``np.savez`` output) and removes
them. The writer keeps no reference to a batch after ``write`` returns, so memory stays at one
batch for any N (50,000 ImageNet samples at 256² are 9.8 GB on disk, not in RAM).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ditlab.errors import DitlabError
from ditlab.npz import add_member


class StreamingNpzWriter:
    def __init__(self, path: Path, num_samples: int, image_shape: tuple[int, int, int]):
        self.path = Path(path)
        self.num_samples = num_samples
        self.parts = {name: self.path.with_name(f".{self.path.name}.{name}.npy.partial") for name in ("arr_0", "arr_1")}
        self._images = np.lib.format.open_memmap(
            self.parts["arr_0"], mode="w+", dtype=np.uint8, shape=(num_samples, *image_shape)
        )
        self._labels = np.lib.format.open_memmap(self.parts["arr_1"], mode="w+", dtype=np.int64, shape=(num_samples,))
        self.count = 0

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append one batch: ``images`` uint8 (B, H, W, C), ``labels`` (B,)."""
        end = self.count + len(images)
        if images.dtype != np.uint8 or images.shape[1:] != self._images.shape[1:] or end > self.num_samples:
            raise DitlabError(
                f"batch of {images.dtype} {images.shape} does not fit the archive "
                f"{self._images.shape} (written so far: {self.count})"
            )
        self._images[self.count : end] = images
        self._labels[self.count : end] = labels
        self._images.flush()  # let the OS write the pages out instead of accumulating them
        self.count = end

    def images(self) -> np.ndarray:
        """Read-only view of what was written (memory-mapped; slicing reads only the rows asked for)."""
        return self._images[: self.count]

    def close(self) -> Path:
        """Assemble the ``.npz`` (uncompressed zip of the two .npy files) and remove the parts."""
        if self.count != self.num_samples:
            raise DitlabError(f"only {self.count} of {self.num_samples} samples were written; not saving {self.path}")
        self._images.flush()
        self._labels.flush()
        del self._images, self._labels  # unmap before the files are read and removed
        tmp = self.path.with_name(f".{self.path.name}.partial")
        # Copied in chunks, ZIP64 above 4 GB, fixed member times: the same samples give the same bytes.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, part in self.parts.items():
                with open(part, "rb") as f:
                    add_member(zf, f"{name}.npy", f)
        tmp.replace(self.path)
        self.discard()
        return self.path

    def discard(self) -> None:
        """Remove the partial files (after close, or when sampling failed)."""
        for attr in ("_images", "_labels"):
            if hasattr(self, attr):
                delattr(self, attr)
        for part in self.parts.values():
            part.unlink(missing_ok=True)
        self.path.with_name(f".{self.path.name}.partial").unlink(missing_ok=True)
