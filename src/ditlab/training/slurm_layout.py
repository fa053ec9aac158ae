"""A Slurm job's task layout against the trainer's, checked before anything is built or written.

Lightning's ``SLURMEnvironment`` (chosen when ``SLURM_NTASKS`` is set, the job is not named
``bash``/``interactive`` and torchrun did not start the process) refuses ``--ntasks`` without
``--ntasks-per-node`` and a mismatch of ``--ntasks-per-node``/``--nodes`` with
``trainer.devices``/``trainer.num_nodes``, each as a traceback deep in ``Trainer``; a total of tasks
that matches neither (``--ntasks=3 --ntasks-per-node=2``) would hang at the rendezvous instead.
Here each is one line naming the sbatch options that give the trainer's layout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ditlab.errors import DitlabError

INTERACTIVE_JOB_NAMES = ("bash", "interactive")  # Lightning leaves these to another environment


def slurm_launches(env: Mapping[str, str]) -> bool:
    """Whether Lightning will take its process layout from Slurm (its SLURMEnvironment.detect)."""
    if env.get("TORCHELASTIC_RUN_ID"):  # torchrun's environment has priority inside a Slurm job
        return False
    return "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES


def device_count(devices: Any) -> int | None:
    """Processes per node that ``trainer.devices`` asks for; None for ``auto``/-1 (the machine decides)."""
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:  # device ids, "0,1" or "0,"
        return len([p for p in text.split(",") if p.strip()])
    return int(text) if text.isdigit() and int(text) > 0 else None


def _leading_int(value: str | None) -> int | None:
    match = re.match(r"\d+", value or "")  # SLURM_NTASKS_PER_NODE may read "4(x2)"
    return int(match.group()) if match else None


def check_slurm_layout(trainer_cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """Refuse, in one line, a Slurm allocation whose tasks are not ``num_nodes`` x ``devices`` processes."""
    env = os.environ if env is None else env
    if not slurm_launches(env):
        return
    nodes, devices = int(trainer_cfg.get("num_nodes", 1)), device_count(trainer_cfg.get("devices", 1))
    ntasks = _leading_int(env.get("SLURM_NTASKS")) or 1
    per_node = _leading_int(env.get("SLURM_NTASKS_PER_NODE"))
    job_nodes = _leading_int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")) or 1
    problems = []
    if per_node is None and ntasks > 1:
        problems.append(f"--ntasks-per-node is not set, which Lightning requires for {ntasks} tasks")
    if job_nodes != nodes:
        problems.append(f"--nodes={job_nodes} but trainer.num_nodes={nodes}")
    if per_node is not None and devices is not None and per_node != devices:
        problems.append(f"--ntasks-per-node={per_node} but trainer.devices={devices}")
    if devices is not None and not problems and ntasks != nodes * devices:
        problems.append(f"--ntasks={ntasks} but trainer.num_nodes x trainer.devices = {nodes * devices}")
    if problems:
        want = devices if devices is not None else "<devices per node>"
        found = f"SLURM_JOB_NUM_NODES={job_nodes}, SLURM_NTASKS={ntasks}, SLURM_NTASKS_PER_NODE={per_node or 'unset'}"
        raise DitlabError(
            f"the Slurm job's tasks do not match the trainer ({'; '.join(problems)}; {found}): submit with "
            f"`sbatch --nodes={nodes} --ntasks-per-node={want}` (one task per device, started with srun), "
            "or set trainer.num_nodes / trainer.devices to the job's layout"
        )
