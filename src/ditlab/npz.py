"""``.npz`` archives whose bytes depend only on their arrays.

``np.savez`` and ``ZipFile.write`` stamp every member with the current time (or the part file's
modification time), so two identical sample sets differ in bytes. Members here carry a fixed
timestamp, are stored uncompressed (what ``np.load`` and the ADM evaluator read) and are written
atomically.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from ditlab.atomic import replace_atomically

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


def add_member(zf: zipfile.ZipFile, name: str, source: IO[bytes]) -> None:
    """Copy ``source`` into ``zf`` as ``name`` (fixed time, stored, ZIP64 for large members)."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    with zf.open(info, "w", force_zip64=True) as out:
        shutil.copyfileobj(source, out, length=1 << 16)  # small chunks: memory stays flat


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez(path, **arrays)`` with deterministic bytes, written atomically."""

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
                buffer.seek(0)
                add_member(zf, f"{name}.npy", buffer)

    replace_atomically(Path(path), write)
