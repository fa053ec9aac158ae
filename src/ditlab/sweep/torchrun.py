"""Run one sweep job as its own DDP process group: ``python -m torch.distributed.run`` on one node.

Used by the ``torchrun`` Hydra launcher (``hydra/launcher=torchrun``, the plugin in
``hydra_plugins/ditlab_torchrun``). Each job becomes an ordinary *single* run of the training app
(its resolved overrides plus ``hydra.run.dir=<the job's sweep folder>``, never ``-m``), started
``nproc_per_node`` times by torchrun, so Lightning's ``ddp`` finds the torchrun environment and
starts no processes of its own. Several jobs can run side by side, each on its own GPUs
(``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ditlab.errors import DitlabError

LOG_FILE = "launcher.log"  # the job's torchrun output (every rank), in its run folder
RANK_LOG_DIR = "torchrun_logs"  # torchrun's per-rank stdout/stderr files, in the run folder
# torchrun --tee copies each rank's output into launcher.log a whole line at a time, prefixed
# "[default<rank>]:", so two ranks failing at once never interleave within one line.
RANK_PREFIX = re.compile(r"^\s*\[(?:default|rank)(\d+)\]:\s?")
SPAWNING = ("spawn", "fork")  # strategies that start their own processes: not under torchrun


def visible_gpus(gpus: Any) -> list[str]:
    """The GPU ids the launcher may hand out. ``auto``: ``CUDA_VISIBLE_DEVICES`` if set, else every
    GPU torch sees (none on a CPU machine); a list or comma string: exactly those."""
    if gpus is None or str(gpus) == "auto":
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            return [g.strip() for g in env.split(",") if g.strip()]
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    if isinstance(gpus, str):
        return [g.strip() for g in gpus.split(",") if g.strip()]
    return [str(g) for g in gpus]


def gpu_slots(gpus: Sequence[str], nproc_per_node: int, parallel_jobs: int) -> list[str | None]:
    """One ``CUDA_VISIBLE_DEVICES`` value per job slot, disjoint; ``None`` slots on a machine without GPUs."""
    if nproc_per_node < 1 or parallel_jobs < 1:
        raise DitlabError(
            f"hydra.launcher.nproc_per_node={nproc_per_node} and parallel_jobs={parallel_jobs} must be at least 1"
        )
    if not gpus:
        return [None] * parallel_jobs
    need = nproc_per_node * parallel_jobs
    if need > len(gpus):
        raise DitlabError(
            f"hydra.launcher.parallel_jobs={parallel_jobs} x nproc_per_node={nproc_per_node} needs {need} GPUs but "
            f"{len(gpus)} are visible ({','.join(gpus)}); lower hydra.launcher.parallel_jobs or nproc_per_node "
            "(= trainer.devices)"
        )
    return [",".join(gpus[i * nproc_per_node : (i + 1) * nproc_per_node]) for i in range(parallel_jobs)]


def torchrun_command(
    overrides: Sequence[str],
    run_dir: Path,
    *,
    nproc_per_node: int,
    module: str,
    torchrun_args: Sequence[str] = (),
    python: str | None = None,
) -> list[str]:
    """argv of one job: torchrun (standalone: its own rendezvous on a free local port, so groups
    side by side never share a port) running ``python -m <module>`` with the job's overrides."""
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
        "--tee=3",
        f"--log-dir={Path(run_dir).resolve() / RANK_LOG_DIR}",
        *torchrun_args,
        "-m",
        module,
        *overrides,
        f"hydra.run.dir={Path(run_dir).resolve()}",
    ]


def job_problem(trainer: Any, nproc_per_node: int) -> DitlabError | None:
    """Why a job's ``trainer`` config cannot run as one torchrun group of ``nproc_per_node`` processes."""
    devices, strategy = str(trainer.get("devices")), str(trainer.get("strategy"))
    if devices != str(nproc_per_node):
        return DitlabError(
            f"trainer.devices={devices} but hydra.launcher.nproc_per_node={nproc_per_node}; give both "
            f"the same count (e.g. trainer=ddp trainer.devices={nproc_per_node})"
        )
    if any(s in strategy for s in SPAWNING):
        return DitlabError(
            f"trainer.strategy={strategy} starts its own processes; use trainer.strategy=ddp with "
            "hydra/launcher=torchrun"
        )
    return None


def run_group(
    cmd: Sequence[str], run_dir: Path, cuda_visible_devices: str | None, env: dict[str, str] | None = None
) -> tuple[int, Exception | None]:
    """Run one job's torchrun to the end, its output in ``run_dir/launcher.log``; (exit status, its error)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    if cuda_visible_devices is not None:
        full_env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    log_path = run_dir / LOG_FILE
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        returncode = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=full_env).returncode
    return returncode, (None if returncode == 0 else job_error(log_path, returncode))


class JobFailed(RuntimeError):
    """A torchrun job that ended with an exception or a signal; its output is in the job's launcher.log."""


def job_error(log_path: Path, returncode: int) -> Exception:
    """The job's own one-line error (``ditlab: error: ...``) as a DitlabError, else its last exception
    line (lowest rank first), else the exit status; the message points at the full log."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if "ditlab: error: " in line:
            return DitlabError(line.split("ditlab: error: ", 1)[1].strip())
    where = f"(torchrun exit status {returncode}; output in {log_path})"
    exceptions = []  # (rank, -position, message): every rank's last exception line
    for position, line in enumerate(lines):
        prefix = RANK_PREFIX.match(line)
        message = line[prefix.end() :] if prefix else line
        if re.match(r"^\s*[\w.]*(Error|Exception)\b[^:]*:", message) and "ChildFailedError" not in message:
            exceptions.append((int(prefix.group(1)) if prefix else 0, -position, message.strip()))
    if exceptions:
        rank, _, message = min(exceptions)
        return JobFailed(f"{message} (rank {rank}) {where}")
    return JobFailed(f"the job's processes failed {where}")
