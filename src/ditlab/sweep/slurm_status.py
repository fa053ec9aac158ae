"""Job states for submitit on a Slurm cluster without accounting (no slurmdbd, so no ``sacct``).

submitit (1.5) learns whether a job has ended from its result file or, failing that, from
``sacct``. Without accounting every ``sacct`` call fails: submitit logs "Bypassing sacct error ...
status may be inaccurate" on every poll, and a job that died without writing its result file (killed,
out of memory, node failure) never looks finished, so the sweep waits forever.

:func:`install` (called by ditlab's sweep callback when a multirun starts) checks ``sacct`` once.
If it does not work, submitit's poll runs ``python -m ditlab.sweep.slurm_status <job ids>``
instead, which answers in sacct's format from ``squeue`` (the controller keeps finished jobs for
``MinJobAge``, 300 s by default); a job that squeue no longer lists is reported ``NOT_FOUND``, which
submitit reads as ended (its result file, if any, then decides success). Any remaining "Bypassing
sacct error" warning is logged once per sweep, not on every poll.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Sequence

HEADER = "JobID|State|NodeList"  # the columns submitit asks sacct for (--parsable2)
GONE = "NOT_FOUND"  # not a Slurm state: submitit treats any state outside its "incomplete" list as ended
_installed = False


def sacct_works() -> bool:
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def squeue_as_sacct(job_ids: Sequence[str], squeue_lines: Sequence[str]) -> list[str]:
    """sacct ``--parsable2`` lines for ``job_ids`` from ``squeue -o %i|%T|%N`` lines; ids of jobs
    squeue no longer lists get the state ``NOT_FOUND``."""
    listed = [line.strip() for line in squeue_lines if line.count("|") == 2]
    mains = {re.split(r"[_\[]", line.split("|", 1)[0])[0] for line in listed}
    gone = [f"{job}|{GONE}|" for job in job_ids if job.split("_")[0] not in mains]
    return [HEADER, *listed, *gone]


def main(job_ids: Sequence[str]) -> int:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "--me", "-o", "%i|%T|%N"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"squeue failed: {e}", file=sys.stderr)
        return 1
    if out.returncode != 0:  # e.g. the controller is down: let submitit keep its last known states
        sys.stderr.write(out.stderr)
        return out.returncode
    print("\n".join(squeue_as_sacct(job_ids, out.stdout.splitlines())))
    return 0


class OnceFilter(logging.Filter):
    """Lets the first "Bypassing sacct error" record through (with a note) and drops the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg = f"{record.getMessage()} (logged once; job states then come from result files)"
        record.args = ()
        return True


def install() -> None:
    """Quiet submitit's sacct warnings and, where sacct does not work, poll squeue instead."""
    global _installed
    try:
        from submitit.slurm.slurm import SlurmInfoWatcher
    except ImportError:  # no submitit: nothing polls sacct
        return
    logger = logging.getLogger("submitit")
    logger.filters = [f for f in logger.filters if not isinstance(f, OnceFilter)]
    logger.addFilter(OnceFilter())  # once per sweep
    if _installed or sacct_works():
        return
    _installed = True
    original = SlurmInfoWatcher._make_command

    def squeue_command(self: SlurmInfoWatcher) -> list[str] | None:
        if original(self) is None:
            return None
        return [sys.executable, "-m", "ditlab.sweep.slurm_status", *sorted(self._registered - self._finished)]

    SlurmInfoWatcher._make_command = squeue_command


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
