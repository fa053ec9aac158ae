"""Input files and output folders checked before any work: each problem is one line naming the file.

Sample sets (``.npz``, ADM layout) are read by ``ditlab-eval`` and ``ditlab-classify`` through
:func:`read_sample_set`; files that may be pickles (checkpoints, caches) are told apart by
:func:`is_pickle`, so a pickle payload is refused as what it is, never as a damaged file; output
folders are checked by :func:`check_writable` before sampling or evaluating starts.
"""

from __future__ import annotations

import io
import os
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ditlab.errors import DitlabError

# torch.save files from torch < 1.6 start with this pickled magic number; they are torch files.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def is_pickle(path: str | Path) -> bool:
    """True for a bare pickle stream (protocol 2-5), which only an unpickler that runs code can read.

    Its first opcodes must parse as pickle opcodes, so a file that merely starts with the same two
    bytes (a safetensors header 640 bytes long begins ``80 02 00``) is not taken for one."""
    with open(path, "rb") as f:
        head = f.read(256)
    if len(head) < 3 or head[0] != 0x80 or not 2 <= head[1] <= 5 or head.startswith(LEGACY_TORCH_MAGIC):
        return False
    try:
        for _ in zip(range(3), pickletools.genops(io.BytesIO(head))):
            pass
    except Exception:  # noqa: BLE001 - not opcodes: another format
        return False
    return True


def python_objects(path: str | Path, what: str, fix: str) -> DitlabError:
    """The one message for a file that holds pickled Python objects."""
    return DitlabError(f"{path} holds Python objects{what} that weights-only loading will not run; {fix}")


def check_writable(path: str | Path | None, option: str, file: bool = False) -> None:
    """Refuse, before any work, an output path whose folder cannot be created or written.

    ``path`` is the output folder (or, with ``file=True``, file); its nearest existing ancestor
    decides (os.access also reports a read-only file system for root)."""
    if not path:
        return
    target = Path(str(path)).expanduser().absolute()
    folder = target.parent if file and target.is_file() else target  # an output file that exists: its folder
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise DitlabError(f"{option}={path}: {folder} is a file, not a folder; choose another {option}")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.is_file() and not os.access(target, os.W_OK)):
        raise DitlabError(f"{option}={path}: {folder} is not writable (read-only); choose another {option}")


def check_new_file(path: str | Path | None, option: str, overwrite: bool) -> None:
    """Refuse an output file that exists unless ``overwrite=true`` (nothing written is replaced unasked)."""
    if path and Path(str(path)).expanduser().is_file() and not overwrite:
        raise DitlabError(
            f"{option}={path} already exists; choose another {option}=... or pass overwrite=true to replace it"
        )


def read_sample_set(
    path: str | Path,
    *,
    labels_required: bool = False,
    num_classes: int | None = None,
    channels: tuple[int, ...] = (1, 3),
) -> tuple[np.ndarray, np.ndarray | None, Path]:
    """uint8 images ``arr_0`` (N, H, W, C) and the labels ``arr_1`` (or None) of a samples ``.npz``
    or a run directory's ``samples.npz``, checked: at least one image, one integer label per image
    in ``[0, num_classes)`` when given. Returns (images, labels, the file read)."""
    path = Path(str(path))
    if path.is_dir():
        path = path / "samples.npz"
    if not path.is_file():
        raise DitlabError(f"{path} not found; pass a samples .npz (uint8 arr_0, int arr_1 labels) or a run directory")
    images, labels = _load_arrays(path)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in channels:
        raise DitlabError(
            f"{path}: arr_0 must hold uint8 images (N, H, W, {' or '.join(map(str, channels))}), got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise DitlabError(f"{path} holds no images (arr_0 has 0 rows); pass a sample set with images")
    if labels is None:
        if labels_required:
            raise DitlabError(
                f"{path} has no labels (arr_1), which accuracy metrics need; pass samples written with their "
                "labels (ditlab-sample, ditlab-train) or leave the accuracy metric out"
            )
        return images, None, path
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
        raise DitlabError(
            f"{path}: arr_1 must hold one integer label per image ({len(images)}), got {labels.dtype} {labels.shape}"
        )
    if num_classes is not None and ((labels < 0) | (labels >= num_classes)).any():
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise DitlabError(
            f"{path}: arr_1 holds labels outside the classifier's classes [0, {num_classes}) (e.g. {int(bad[0])}); "
            "pass the labels the samples were drawn for"
        )
    return images, labels, path


def _load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):  # an .npy file: one array
            raise DitlabError(f"{path} holds a single array, not an .npz archive with arr_0 (images) and arr_1")
        with loaded as f:
            if "arr_0" not in f.files:
                raise DitlabError(
                    f"{path} has no arr_0 (it holds {', '.join(f.files) or 'nothing'}); samples are uint8 images "
                    "(N, H, W, C) in arr_0"
                )
            return f["arr_0"], (f["arr_1"] if "arr_1" in f.files else None)
    except DitlabError:
        raise
    except ValueError as e:  # np.load says "allow_pickle" for object arrays and for any file it cannot place
        if "allow_pickle" in str(e) and (zipfile.is_zipfile(path) or is_pickle(path)):
            what = " (object arrays)" if zipfile.is_zipfile(path) else " (a pickle)"
            raise python_objects(path, what, "save plain arrays (uint8 arr_0, int arr_1)") from None
        raise _unreadable(path, e) from None
    except Exception as e:  # noqa: BLE001 - not a zip, truncated: one line
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: Exception) -> DitlabError:
    return DitlabError(
        f"{path} is not a readable .npz archive ({type(e).__name__}: {str(e)[:100]}); the file is damaged, truncated "
        "or of another format: pass a samples.npz written by ditlab-train or ditlab-sample"
    )


def check_npz(path: str | Path, option: str) -> None:
    """An ``.npz`` that ``np.load(allow_pickle=False)`` reads, with no object arrays and a non-empty
    ``arr_0`` if it has one; only the array headers are read (a 50K-image reference stays on disk)."""
    path = Path(str(path))
    if not path.is_file():
        raise DitlabError(f"{option}={path}: no such file; pass an .npz archive")
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                with zf.open(name) as member:
                    major, _ = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise python_objects(path, f" (object array {name})", f"write {option} with plain arrays")
                if name == "arr_0.npy" and (not shape or shape[0] == 0):
                    raise DitlabError(f"{option}={path} holds no images (arr_0 has 0 rows); pass a file with images")
    except DitlabError:
        raise
    except Exception as e:  # noqa: BLE001 - not a zip, truncated, not .npy members
        raise _unreadable(path, e) from None


def load_weights(path: str | Path, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` of a cache file; a pickle payload is refused as Python
    objects, other failures as a damaged file, each in one line ending with ``fix``."""
    import torch

    if is_pickle(path):
        raise python_objects(path, "", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read becomes one line
        if refuses_objects(e):
            raise python_objects(path, f" ({refused_global(e)})", fix) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise DitlabError(f"{path} is damaged or truncated ({first}); {fix}") from None


def refuses_objects(e: Exception) -> bool:
    """True when ``torch.load(weights_only=True)`` failed on a pickled object rather than on damaged bytes."""
    return "Weights only load failed" in str(e) or "Unsupported global" in str(e)


def refused_global(e: Exception) -> str:
    """The class or function a weights-only load refused, e.g. ``posix.mkdir``."""
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    return found.group(1) if found else "a class outside the allowlist"
