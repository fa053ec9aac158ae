"""A run directory belongs to one live process group: ``<run>/run.lock``.

Global rank 0 holds an OS-level lock (``fcntl.flock``, exclusive) on ``run.lock`` for the run's
lifetime; the file also records its pid, host, start time and SLURM job id for the messages. The
kernel releases a flock with the process, so after ``kill -9`` or the OOM killer on the same host
the next launch takes the run over by itself (and says so in one line). A second launch while the
holder lives is refused in one line naming it, even with ``takeover_lock=true``.

Another host's lock: a network file system may arbitrate flock across hosts (NFSv4) or only
locally (``nolock``/``local_lock`` mounts), so a file naming another host whose flock is free is
not proof that its process ended: only ``takeover_lock=true`` (the user's word) or a requeued SLURM
job with the same job id (SLURM guarantees the earlier incarnation ended) takes it. Where the file
system refuses flock altogether (``ENOLCK``, ``EOPNOTSUPP``) the file alone is the lock: a holder
on this host with a dead pid is *stale* and taken over only with ``takeover_lock=true``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ditlab.errors import DitlabError

log = logging.getLogger("ditlab")
LOCK_FILE = "run.lock"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLock:
    def __init__(self, run_dir: Path, takeover: bool = False):
        self.path = Path(run_dir) / LOCK_FILE
        self.takeover = takeover
        self.held = False
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(10):  # the holder may unlink the file between our open and our flock: retry
                if self._try_flock():
                    return
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                if e.errno not in _NO_FLOCK:
                    raise DitlabError(f"cannot lock the run folder {self.path.parent}: {e.strerror}") from None
                self._acquire_without_flock()
                return
            raise DitlabError(
                f"cannot write to the run folder {self.path.parent} ({e.strerror}); choose a run folder you can "
                "write (paths.runs_dir=... or run_name=...)"
            ) from None
        raise DitlabError(f"{self.path.parent} was locked by another launch at the same moment; try again")

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # under the flock: a waiting launch sees the inode vanish
            os.close(self._fd)
            self._fd, self.held = None, False
        elif self.held:
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False

    def _try_flock(self) -> bool:
        """True once this process holds the flock on the file now at ``self.path``; raises if refused."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path) or {}
            raise DitlabError(
                f"{self.path.parent} is in use by a live run: {_who(holder)}; wait for it, stop it, or choose "
                "another run_name=..."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:  # released and unlinked meanwhile
                os.close(fd)
                return False
        except FileNotFoundError:
            os.close(fd)
            return False
        holder = _read_fd(fd)
        if holder is not None:
            try:
                self._check_earlier_holder(holder)
            except DitlabError:
                os.close(fd)
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        self._fd, self.held = fd, True
        return True

    def _check_earlier_holder(self, holder: dict[str, Any]) -> None:
        """The flock is free but a holder's record is there: it ended without releasing (or lives elsewhere)."""
        if holder.get("host") != socket.gethostname() and not self.takeover and not _own_requeued_job(holder):
            raise DitlabError(
                f"{self.path.parent} is locked by {_who(holder)}, which cannot be checked from this host (see "
                "docs/runs.md: locks across hosts); if that run has ended, take it over with takeover_lock=true"
            )
        log.warning("taking over %s: its holder %s ended without releasing it", self.path, _who(holder))

    def _acquire_without_flock(self) -> None:
        """File systems without flock: the lock file is created atomically, and liveness is a pid check."""
        if self._create():
            return
        holder = read_holder(self.path)
        if holder is not None and not self.takeover and not _own_requeued_job(holder):
            state, who = _liveness(holder), _who(holder)
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
        holder = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # vanished, empty, or half-written by a launch that died
    return holder if isinstance(holder, dict) else None


def is_locked_by_live_process(run_dir: Path) -> bool:
    """Whether a process holds the run's lock (a flock probe; the pid check where flock is unavailable)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        holder = read_holder(path)
        return holder is not None and _liveness(holder) != "dead"
    finally:
        os.close(fd)
    holder = read_holder(path)
    return holder is not None and holder.get("host") != socket.gethostname()  # elsewhere: cannot tell


def _read_fd(fd: int) -> dict[str, Any] | None:
    try:
        holder = json.loads(os.pread(fd, 1 << 16, 0).decode() or "null")
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _who(holder: dict[str, Any]) -> str:
    job = holder.get("slurm_job_id")
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')}"
        f"{', SLURM job ' + str(job) if job else ''})"
    )


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
