"""One launch on a run directory is a transaction: a refused launch leaves the folder as it found it.

:func:`run_attempt` takes the run's lock (rank 0), removes what killed checkpoint writers left, and
notes what the folder holds. Until training starts (Lightning's ``on_train_start``: every option
checked, the trainer, loggers and checkpoint restored) the attempt is *tentative*: if it fails,
what it created is deleted, what it appended to (``cli.log``, ``resumes.jsonl``) is cut back, and
what ``overwrite=true`` set aside is put back. Once training starts, the attempt is the run
(files of a failed run are its record). A folder left holding nothing but empty logs (Hydra opens
its ``cli.log`` before ditlab runs) is removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

import lightning as L

from ditlab.checkpoints.checkpoint_io import remove_orphaned_temporaries
from ditlab.checkpoints.run_lock import LOCK_FILE, RunLock

log = logging.getLogger("ditlab")
APPEND_ONLY = (".log", ".jsonl")  # files an attempt appends to: cut back to their earlier size
SET_ASIDE = ".replaced"  # overwrite=true moves the earlier run here until training starts


class RunAttempt(L.Callback):
    """Commits at ``on_train_start`` (add it to the trainer's callbacks); see the module docstring."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.committed = False
        self.before: dict[str, int] = {}  # relative path -> size (-1: folder)
        self.aside = self.run_dir / f"{SET_ASIDE}-{os.getpid()}"

    def begin(self) -> None:
        self.before = snapshot(self.run_dir)

    def set_aside(self, target: Path) -> None:
        """``overwrite=true``: move an earlier run's entry away; deleted at commit, restored on failure."""
        self.aside.mkdir(exist_ok=True)
        os.replace(target, self.aside / target.name)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.commit()

    def commit(self) -> None:
        self.committed = True
        if self.aside.exists():
            shutil.rmtree(self.aside, ignore_errors=True)

    def roll_back(self) -> None:
        now = snapshot(self.run_dir)
        for rel in sorted(now, key=lambda r: -r.count(os.sep)):  # deepest first: files before their folders
            path = self.run_dir / rel
            if rel == LOCK_FILE or rel.split(os.sep)[0] == self.aside.name:
                continue
            if rel not in self.before:
                shutil.rmtree(path, ignore_errors=True) if now[rel] < 0 else path.unlink(missing_ok=True)
            elif path.suffix in APPEND_ONLY and 0 <= self.before[rel] < now[rel]:
                os.truncate(path, self.before[rel])
        if self.aside.exists():
            for entry in self.aside.iterdir():
                os.replace(entry, self.run_dir / entry.name)
            self.aside.rmdir()


def snapshot(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its size (-1 for folders)."""
    found: dict[str, int] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = -1
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                found[os.path.relpath(path, folder)] = os.path.getsize(path)
    return found


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but empty log files (what Hydra creates before ditlab runs)."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    if all(p.is_file() and p.suffix == ".log" and p.stat().st_size == 0 for p in entries):
        for p in entries:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def run_attempt(run_dir: Path, takeover: bool, rank_zero: bool) -> Iterator[RunAttempt]:
    """The lock, the clean-up of killed writes, and the roll-back of a launch that fails before training."""
    attempt = RunAttempt(run_dir)
    if not rank_zero:  # rank 0 owns the folder; other ranks only train
        yield attempt
        return
    try:
        with RunLock(run_dir, takeover=takeover):
            remove_orphaned_temporaries(Path(run_dir) / "checkpoints")  # even when this launch is refused
            attempt.begin()
            try:
                yield attempt
            except BaseException:
                if not attempt.committed:
                    attempt.roll_back()
                raise
            attempt.commit()
    finally:
        remove_if_empty(run_dir)


@contextlib.contextmanager
def leave_no_log_on_error(folder: Path, keep: Collection[Path] = ()) -> Iterator[None]:
    """For tools whose Hydra log folder may be someone else's (ditlab-extract's ``<cache_dir>/logs``): a
    failed call cuts its log lines back and removes what it created there, if that is only logs.
    ``keep``: folders that existed before Hydra ran, never removed (an empty cache folder of the user's)."""
    folder = Path(folder)
    before = snapshot(folder) if folder.exists() else {}
    try:
        yield
    except BaseException:
        for rel, size in snapshot(folder).items() if folder.exists() else ():
            path = folder / rel
            if path.suffix == ".log" and size > before.get(rel, 0) >= 0:
                os.truncate(path, before.get(rel, 0))
        if folder.resolve() not in keep:
            remove_if_empty(folder)
        if not folder.exists() and folder.parent.resolve() not in keep:
            remove_if_empty(folder.parent)  # e.g. a cache_dir that Hydra created for the log folder
        raise
