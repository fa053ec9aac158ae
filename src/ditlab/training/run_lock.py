"""A run directory belongs to one live process group: ``<run>/run.lock``.

The lock file is created atomically (``O_CREAT | O_EXCL``) by global rank 0 and holds its pid,
host, start time and SLURM job id. A second launch is refused in one line naming the holder. A
lock whose process is gone (same host, dead pid) is *stale*: it is reported, and taken over with
``takeover_lock=true``. A requeued SLURM job (same job id) takes over its own earlier lock, since
SLURM guarantees the earlier incarnation has ended. On another host liveness cannot be checked:
only ``takeover_lock=true`` (the user's word) takes such a lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ditlab.errors import DitlabError

LOCK_FILE = "run.lock"


class RunLock:
    def __init__(self, run_dir: Path, takeover: bool = False):
        self.path = Path(run_dir) / LOCK_FILE
        self.takeover = takeover
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return
        holder = read_holder(self.path)
        if holder is not None and not self.takeover and not _own_requeued_job(holder):
            state = _liveness(holder)
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')}"
                f"{', SLURM job ' + str(holder['slurm_job_id']) if holder.get('slurm_job_id') else ''})"
            )
            if state == "alive":
                raise DitlabError(
                    f"{self.path.parent} is in use by a live run: {who}; wait for it, stop it, or "
                    "choose another run_name=..."
                )
            if state == "dead":
                raise DitlabError(
                    f"{self.path.parent} has a stale lock: {who} is no longer running; if no other "
                    "process uses this run, take it over with takeover_lock=true"
                )
            raise DitlabError(
                f"{self.path.parent} is locked by {who}, which cannot be checked from this host; "
                "if that run has ended, take it over with takeover_lock=true"
            )
        self.path.unlink(missing_ok=True)  # stale, our own requeued job, or taken over on request
        if not self._create():
            raise DitlabError(f"{self.path.parent} was locked by another launch at the same moment; try again")

    def release(self) -> None:
        if self.held:
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(_me(), f)
        self.held = True
        return True


def read_holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # vanished, or half-written by a launch that died: treated as stale


def is_locked_by_live_process(run_dir: Path) -> bool:
    holder = read_holder(Path(run_dir) / LOCK_FILE)
    return holder is not None and _liveness(holder) != "dead"


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def _liveness(holder: dict[str, Any]) -> str:
    if holder.get("host") != socket.gethostname():
        return "unknown"
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return "dead"
    except (PermissionError, KeyError, TypeError, ValueError):
        return "alive"  # exists but belongs to someone else (or the file is odd): never assume dead
    return "alive"


def _own_requeued_job(holder: dict[str, Any]) -> bool:
    job = os.environ.get("SLURM_JOB_ID")
    return bool(job) and holder.get("slurm_job_id") == job and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
