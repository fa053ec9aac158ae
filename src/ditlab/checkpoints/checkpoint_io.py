"""Checkpoint files that are complete or absent, no orphaned temporaries, and the newest complete one.

Lightning's default writer goes through an fsspec transaction whose temporary file has a random
name; a process killed mid-write leaves it behind (checkpoints are hundreds of MB at DiT-XL size).
Here a checkpoint is written to ``<name>.tmp-<pid>`` and renamed into place
(:mod:`ditlab.atomic`), and a new attempt on the run removes what killed writers left. A write
that fails (full disk, read-only folder) removes its temporary and stops the run in one line; the
checkpoint it would have replaced stays as it was.

A kill can land between the two files of one save (``step*.ckpt``, then ``last.ckpt``), so a run's
resume point is the newest *complete* checkpoint of ``last.ckpt`` and ``step*.ckpt``, each read
(``weights_only``) before it is chosen: see :func:`newest_complete_checkpoint`.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ditlab.atomic import remove_temporaries, replace_atomically
from ditlab.checkpoints.checkpoint_file import read_checkpoint
from ditlab.errors import DitlabError

log = logging.getLogger("ditlab")
LAST_CKPT = "last.ckpt"
_STEP_FILE = re.compile(r"^step(\d+)(?:-v\d+)?\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(path, lambda tmp: torch.save(checkpoint, tmp))
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
            raise DitlabError(_write_failed(path, e)) from None


def _write_failed(path: Path, error: BaseException) -> str:
    why = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return (
        f"writing checkpoint {path} failed ({why}; {free} in {path.parent}); the run stopped and the checkpoints "
        "already there are intact: free disk space or make the folder writable, then resume with ckpt_path=last"
    )


def remove_orphaned_temporaries(folder: Path) -> None:
    """Delete ``*.ckpt.tmp-*`` files that killed writers left in ``folder`` (call under the run lock)."""
    for ckpt in {p.name.split(".tmp-")[0] for p in Path(folder).glob("*.ckpt.tmp-*")}:
        remove_temporaries(Path(folder) / ckpt)


def checked_checkpoint(path: Path) -> Mapping[str, Any] | None:
    """The checkpoint at ``path`` if it is complete and resumable; else None, after one line saying why."""
    try:
        ckpt = read_checkpoint(path)
    except DitlabError as e:
        log.warning("skipping %s: %s", path, e)
        return None
    if "loops" not in ckpt or "optimizer_states" not in ckpt or "global_step" not in ckpt:
        log.warning("skipping %s: it holds no optimizer or loop state to resume from", path)
        return None
    return ckpt


def newest_complete_checkpoint(folder: Path) -> tuple[Path, Mapping[str, Any]] | None:
    """The newest of ``last.ckpt`` and ``step*.ckpt`` by the step stored inside, checked before use.

    Step files are read newest first (by the step in their name) and only while they could beat
    ``last.ckpt``, so a healthy run reads one or two files. On a tie ``last.ckpt`` wins: it is also
    the file a signal's final save writes."""
    folder = Path(folder)
    best: tuple[Path, Mapping[str, Any]] | None = None
    last = folder / LAST_CKPT
    if last.is_file():
        ckpt = checked_checkpoint(last)
        best = (last, ckpt) if ckpt is not None else None
    best_step = int(best[1]["global_step"]) if best else -1
    for step, path in sorted(_step_files(folder), key=lambda sp: (-sp[0], sp[1].name)):
        if step <= best_step:
            break
        ckpt = checked_checkpoint(path)
        if ckpt is not None and int(ckpt["global_step"]) > best_step:
            return path, ckpt
    return best


def _step_files(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("step*.ckpt"):
        match = _STEP_FILE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return found
