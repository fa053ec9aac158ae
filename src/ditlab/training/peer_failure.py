"""A DDP process that dies (killed, out of memory, node lost) ends the job in one line per survivor.

With gloo the surviving ranks fail within seconds in their next collective, with a traceback that
ends in "Connection reset/closed by peer ... GLHF!". :func:`lost_peer_error` turns that exception
into a :class:`PeerLost` line naming this rank and node, the rank and node it lost (exact for two
processes, else the peer's address), and the command that resumes from the last checkpoint.
(NCCL can instead block until the process group's timeout; that is not tested here.)
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

from ditlab.errors import DitlabError

# gloo's transport errors when the other end of a pair went away; torch raises them as RuntimeError
# (or its DistBackendError / DistNetworkError subclasses).
LOST_PEER = re.compile(r"gloo.*(Connection (closed|reset) by peer|Read error|Write error|Broken pipe|Socket closed)")
PEER_ADDRESS = re.compile(r"\[([0-9a-fA-F.:]+)\]:(\d+)")


class PeerLost(DitlabError):
    """Another process of this run's DDP group stopped; the run can resume from its last checkpoint."""


def node_names() -> list[str]:
    """The job's nodes in SLURM's order (empty outside SLURM)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        return []
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def rank_node(rank: int) -> str | None:
    """The node SLURM placed ``rank`` on (block distribution: consecutive ranks share a node)."""
    tasks = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
    nodes = node_names()
    if not tasks.isdigit() or not nodes or rank // int(tasks) >= len(nodes):
        return None
    return nodes[rank // int(tasks)]


def resume_command(overrides: list[str], run_dir: Path, multirun: bool) -> str:
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    where = [f"hydra.run.dir={run_dir}"] if multirun else []
    return shlex.join(["ditlab-train", *kept, *where, "ckpt_path=last"])


def lost_peer_error(
    error: BaseException, *, rank: int, world_size: int, run_dir: Path, overrides: list[str], multirun: bool = False
) -> PeerLost | None:
    """The one-line error for a DDP peer that went away, or None if ``error`` is something else."""
    text = str(error)
    if world_size < 2 or not LOST_PEER.search(text):
        return None
    here = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    if world_size == 2:
        lost_rank = 1 - rank
        lost_node = rank_node(lost_rank)
        lost = f"rank {lost_rank}" + (f" on {lost_node}" if lost_node else "")
    else:
        address = PEER_ADDRESS.search(text)
        lost = f"a process at {address.group(1)}:{address.group(2)}" if address else "another process"
    reason = text.split("]", 1)[-1].split(". This is typically")[0].strip()
    return PeerLost(
        f"rank {rank} on {here} lost {lost} of the {world_size}-process DDP group ({reason}): that process "
        f"died or was killed (its own log says why); the run stops here. Resume from its last checkpoint: "
        f"{resume_command(overrides, run_dir, multirun)}"
    )
