"""The run directory: what a run writes, how a rerun is refused, how ``ckpt_path=last`` resumes.

Layout of ``runs/<run_name>/``::

    run.lock            while a process group runs it (pid, host, start; see training/run_lock.py)
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
import os
import shutil
from pathlib import Path

from ditlab.errors import DitlabError

CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
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


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> Path | None:
    """``None`` | ``"last"`` (this run's last checkpoint) | ``"auto"`` (last if there is one, else a new
    run) | a path. Missing files are an error. Inside a requeued SLURM job ``None`` means ``auto``:
    the scheduler reruns the original command, which must continue its run."""
    if ckpt_path in (None, "", "null") and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        ckpt_path = "auto"
    if ckpt_path in (None, "", "null"):
        return None
    last = run_dir / CHECKPOINT_DIR / LAST_CKPT
    if ckpt_path == "auto":
        return last if last.is_file() else None
    path = last if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        if ckpt_path == "last":
            raise DitlabError(
                f"ckpt_path=last but {path} does not exist: there is nothing to resume in {run_dir}; "
                "drop ckpt_path to start a new run"
            )
        raise DitlabError(f"checkpoint {path} not found; set ckpt_path to an existing .ckpt file or to 'last'")
    return path


def run_status(run_dir: Path) -> str | None:
    """The ``status`` in ``summary.json`` (finished | interrupted), or None when there is none."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def prepare_run_dir(run_dir: Path, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run on top of an earlier one unless told to resume or overwrite."""
    existing = [name for name in (CHECKPOINT_DIR, *OUTPUT_FILES) if (run_dir / name).exists()]
    if existing and not resuming:
        if not overwrite:
            state = "a finished run" if run_status(run_dir) == "finished" else "an unfinished run"
            raise DitlabError(
                f"{run_dir} already holds {state} ({', '.join(existing)}); resume it with ckpt_path=last, "
                "choose another run_name=..., or pass overwrite=true to replace it"
            )
        for name in existing:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if (run_dir / "logs").exists():
            shutil.rmtree(run_dir / "logs")
    run_dir.mkdir(parents=True, exist_ok=True)


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
