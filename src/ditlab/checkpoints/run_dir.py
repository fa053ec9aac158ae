"""The run directory: what a run writes, how a rerun is refused, how ``ckpt_path=last`` resumes.

``ckpt_path=last`` / ``auto`` resume from the newest *complete* checkpoint of the run (see
:func:`ditlab.checkpoints.checkpoint_io.newest_complete_checkpoint`); every refusal names that
checkpoint and the exact command to run next.

Layout of ``runs/<run_name>/``::

    run.lock            while a process group runs it (pid, host, start; see checkpoints/run_lock.py)
    config.yaml         resolved config (reproduce: see docs/outputs.md); never rewritten by a resume
    overrides.txt       the command-line overrides of the first attempt
    resumes.jsonl       one line per resume: checkpoint, step, allowed changes, overrides
    checkpoints/        last.ckpt (+ periodic step*.ckpt): model, EMA after that step, optimizer, loop and loader position
    logs/version_*/     one CSV log per attempt (a resume adds one); merged into metrics.csv
    metrics.csv         per-step metrics of every attempt
    samples.npz         arr_0 uint8 (N, H, W, C), arr_1 int labels
    samples_grid.png    one row per class
    eval/               metrics.jsonl (one row per evaluation: values + sampling recipe), grid_step*.png
    summary.json        status (finished | interrupted), params, Gflops, steps, images seen, times, loss,
                        sampling recipe, seed, commit
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ditlab.checkpoints.checkpoint_io import LAST_CKPT as LAST_CKPT  # re-exported: rd.LAST_CKPT
from ditlab.checkpoints.checkpoint_io import newest_complete_checkpoint
from ditlab.errors import DitlabError

log = logging.getLogger("ditlab")
CHECKPOINT_DIR = "checkpoints"
OUTPUT_FILES = (
    "summary.json",
    "samples.npz",
    "samples_grid.png",
    "metrics.csv",
    "config.yaml",
    "overrides.txt",
    "resumes.jsonl",
    "eval",
)  # eval/: the evaluation history (metrics.jsonl) and grids


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> tuple[Path, Mapping[str, Any] | None] | None:
    """``None`` | ``"last"`` (this run's newest complete checkpoint) | ``"auto"`` (that if there is one, else a
    new run) | a path. Returns the checkpoint's path and, when already read and checked, its contents.
    Missing files are an error. Inside a requeued SLURM job ``None`` means ``auto``: the scheduler
    reruns the original command, which must continue its run."""
    if ckpt_path in (None, "", "null") and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        ckpt_path = "auto"
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path in ("auto", "last"):
        newest = newest_complete_checkpoint(run_dir / CHECKPOINT_DIR)
        if newest is not None:
            log.info("resuming %s from %s (step %d)", run_dir, newest[0], int(newest[1]["global_step"]))
            return newest
        if ckpt_path == "auto":
            return None
        if started_files(run_dir):
            raise DitlabError(
                f"ckpt_path=last but {run_dir} holds no complete checkpoint (an unfinished run that saved none, "
                f"or only damaged ones); start it again with: {rerun_command('overwrite=true')}"
            )
        raise DitlabError(
            f"ckpt_path=last but {run_dir} holds no run: there is nothing to resume; "
            f"start a new run with: {rerun_command()}"
        )
    path = Path(ckpt_path)
    if not path.is_file():
        raise DitlabError(f"checkpoint {path} not found; set ckpt_path to an existing .ckpt file or to 'last'")
    return path, None


def run_status(run_dir: Path) -> str | None:
    """The ``status`` in ``summary.json`` (finished | interrupted), or None when there is none."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def started_files(run_dir: Path) -> list[str]:
    """What an earlier attempt left in ``run_dir`` (empty: no run there)."""
    return [name for name in (CHECKPOINT_DIR, *OUTPUT_FILES) if (run_dir / name).exists()]


def prepare_run_dir(
    run_dir: Path, resuming: bool, overwrite: bool, set_aside: Callable[[Path], None] | None = None
) -> None:
    """Refuse to start a fresh run on top of an earlier one unless told to resume or overwrite.

    ``set_aside`` takes each replaced entry (overwrite=true); by default it is deleted. A sweep job
    that failed before training left only its failure record (``summary.json``, status failed; a
    failed launch removes everything else): the corrected command replaces it without overwrite=true."""
    existing = started_files(run_dir)
    if existing == ["summary.json"] and run_status(run_dir) == "failed" and not resuming:
        log.info("%s: replacing the record of a job that failed before training", run_dir)
        overwrite = True
    if existing and not resuming:
        if not overwrite:
            raise DitlabError(occupied_message(run_dir, existing))
        for name in [*existing, "logs"]:
            target = run_dir / name
            if not target.exists():
                continue
            if set_aside is not None:
                set_aside(target)
            else:
                shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def occupied_message(run_dir: Path, existing: list[str]) -> str:
    """Why a fresh launch is refused here, naming the checkpoint a resume would use and the command."""
    other = "choose another run_name=..."
    if run_status(run_dir) == "finished":
        return (
            f"{run_dir} already holds a finished run ({', '.join(existing)}); {other}, train it further with: "
            f"{rerun_command('ckpt_path=last', 'trainer.max_steps=<more>')}, or replace it with: "
            f"{rerun_command('overwrite=true')}"
        )
    newest = newest_complete_checkpoint(run_dir / CHECKPOINT_DIR)
    if newest is None:
        return (
            f"{run_dir} already holds an unfinished run with no complete checkpoint to resume "
            f"({', '.join(existing)}); start it again with: {rerun_command('overwrite=true')}, or {other}"
        )
    return (
        f"{run_dir} already holds an unfinished run; its newest complete checkpoint is {newest[0]} "
        f"(step {int(newest[1]['global_step'])}): resume it with: {rerun_command('ckpt_path=last')}, "
        f"or {other}, or replace it with: {rerun_command('overwrite=true')}"
    )


def rerun_command(*extra: str) -> str:
    """This launch's command line with ``extra`` in place of how it was told to start (ckpt_path, ...)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in _HOW_TO_START]
    return " ".join(["ditlab-train", *(shlex.quote(o) for o in keep), *extra])


_HOW_TO_START = ("ckpt_path", "overwrite", "takeover_lock")


def merge_csv_logs(run_dir: Path) -> Path | None:
    """Concatenate every attempt's ``logs/version_*/metrics.csv`` into ``metrics.csv``.

    A resumed attempt restarts from its checkpoint's step, so rows an earlier attempt logged at or
    after that step (work lost with the crash) are replaced by the new attempt's rows.
    """
    parts = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not parts:
        return None
    merged: list[dict[str, str]] = []
    keys: list[str] = []
    for part in parts:
        with open(part, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        keys.extend(k for k in rows[0] if k not in keys)
        first_step = min(_step(r) for r in rows)
        # At the resume step itself the new attempt logs only what is logged before the first step (the LR):
        # an earlier row there (the loss and evaluation that led to the checkpoint) stays unless it is repeated.
        repeated = {k for r in rows if _step(r) == first_step for k, v in r.items() if v not in ("", None)}
        merged = [r for r in merged if _step(r) < first_step or (_step(r) == first_step and not _metrics(r) & repeated)]
        merged += rows
    out = run_dir / "metrics.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(merged)
    return out


def _step(row: dict[str, str]) -> int:
    return int(float(row.get("step") or 0))


def _metrics(row: dict[str, str]) -> set[str]:
    return {k for k, v in row.items() if v not in ("", None) and k not in ("step", "epoch")}
