"""A full disk is found before any work: the free space of a run's (or a tool's) output folder is
compared with what its first file will need, and a launch that cannot fit is refused in one line.

A checkpoint holds the module's state (the model, its EMA copy and any trained auxiliary part, at
their own dtypes) and the optimizer's per-parameter state, which is measured generically: the
optimizer is built over a small probe tensor and stepped once, and its state tensors are counted
(AdamW: two moments per parameter). Writes are atomic (a temporary file, then a rename), so even a
resume that only replaces ``last.ckpt`` needs room for one whole checkpoint next to the old one.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from ditlab.errors import DitlabError

MARGIN = 1.10  # serialisation overhead and the loops' state, measured under 1% for DiT-tiny
SLACK_BYTES = 16 * 2**20  # config, logs, curves, the run's metadata inside the checkpoint
ADAM_MOMENTS = 2.0  # what the probe falls back to when an optimizer cannot be stepped on it


def optimizer_state_per_param(make_optimizer: Callable[..., torch.optim.Optimizer]) -> float:
    """Bytes of optimizer state per byte of trained parameter, read from one step on a probe tensor."""
    probe = torch.nn.Parameter(torch.zeros(8, 8))
    try:
        optimizer = make_optimizer([("probe.weight", probe)], lr=0.0)
        probe.grad = torch.ones_like(probe)
        optimizer.step()
    except Exception:  # noqa: BLE001 - an optimizer that needs a real model: assume Adam's two moments
        return ADAM_MOMENTS
    sizes = [t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(sizes) / (probe.numel() * probe.element_size())


def tensor_bytes(tensors: Iterable[Any]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def checkpoint_bytes(module: torch.nn.Module, make_optimizer: Callable[..., torch.optim.Optimizer]) -> int:
    """The estimated size of one full checkpoint of ``module`` (state + optimizer state), margin included."""
    state = tensor_bytes(module.state_dict().values())  # model + EMA + trained aux parts
    trained = tensor_bytes(p for p in module.parameters() if p.requires_grad)
    return int((state + trained * optimizer_state_per_param(make_optimizer)) * MARGIN) + SLACK_BYTES


def existing_ancestor(path: Path) -> Path:
    folder = Path(path).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_free_space(folder: Path, needed: int, what: str, fix: str) -> None:
    """Refuse, in one line naming the folder and both sizes, when its file system has less than ``needed``."""
    free = None
    with contextlib.suppress(OSError):  # an unreadable file system is left to the write itself
        free = shutil.disk_usage(existing_ancestor(folder)).free
    if free is not None and free < needed:
        raise DitlabError(
            f"{folder}: {format_bytes(free)} free on its file system, {what} needs {format_bytes(needed)}; {fix}"
        )


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_run_space(run_dir: Path, module: torch.nn.Module) -> None:
    """A run needs room for one checkpoint before it writes anything (docs/runs.md, "Disk space")."""
    needed = checkpoint_bytes(module, module.make_optimizer)
    check_free_space(
        run_dir, needed, "one checkpoint", "free space there or choose another paths.runs_dir=... / run_name=..."
    )
