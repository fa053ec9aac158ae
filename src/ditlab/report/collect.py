"""Find every run under a directory and read what it wrote.

A run folder is one holding ``summary.json`` (finished, or failed: ``status: failed``) or only
the files a started run writes first (Hydra's ``cli.log``, ``config.yaml``, ``overrides.txt``,
``checkpoints/``):
those are *unfinished* (still running, killed, or crashed before the summary).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ditlab.errors import DitlabError
from ditlab.training.compute import training_compute as training_compute  # re-exported: the report's C

# A failed sweep job's record (written by ditlab.sweep.jobs.record_failure), used instead of summary.json
# when a finished summary is already there. Named here, with the other files a run folder is read by, so
# the sweep code imports the report's reader and not the other way round.
FAILURE_FILE = "failure.json"
STARTED_MARKERS = ("config.yaml", "overrides.txt", "checkpoints", "cli.log")  # cli.log: Hydra's job log
SKIP_DIRS = {"report", "wandb", ".submitit", "logs", "eval", "tensorboard", "checkpoints"}


@dataclass
class Run:
    path: Path
    name: str  # path relative to the scanned directory
    status: str  # finished | failed | unfinished
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # eval/metrics.jsonl rows


def collect_runs(root: str | Path) -> list[Run]:
    root = Path(root)
    runs: list[Run] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        names = set(filenames) | set(dirnames)
        if "summary.json" in names or FAILURE_FILE in names or any(m in names for m in STARTED_MARKERS):
            runs.append(_read_run(here, root))
            dirnames[:] = []  # a run's own sub-folders hold no runs
        else:
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
    return sorted(runs, key=lambda r: r.name)


def _read_run(path: Path, root: Path) -> Run:
    name = str(path.relative_to(root)) if path != root else path.name
    summary = _read_json(path / "summary.json")
    if summary is None and (path / FAILURE_FILE).is_file():
        summary = _read_json(path / FAILURE_FILE)
    if summary is None:  # its eval history so far still counts for `ditlab-report --at-step`
        return Run(path, name, "unfinished", _describe_unfinished(path), _read_history(path / "eval/metrics.jsonl"))
    status = "failed" if summary.get("status") == "failed" else "finished"
    if (path / FAILURE_FILE).is_file() and status == "finished":
        status = "failed"  # a later attempt in the same folder failed; the earlier summary is kept
        summary = {**summary, "error": (_read_json(path / FAILURE_FILE) or {}).get("error")}
    return Run(path, name, status, summary, _read_history(path / summary.get("eval_history", "eval/metrics.jsonl")))


def _describe_unfinished(path: Path) -> dict[str, Any]:
    """Model, patch and block from the run's config.yaml, so the report can place it."""
    try:
        from ditlab.models.accounting import describe_model  # lazy for start-up: ditlab-report needs no torch

        cfg = OmegaConf.load(path / "config.yaml")
        out = {**describe_model(cfg.model, cfg.block), "run_name": cfg.get("run_name")}
    except Exception:  # noqa: BLE001 - no or unreadable config: the path is all there is
        return {}
    for hparams in sorted(path.glob("logs/*/hparams.yaml")):  # the model's Gflops, as the logger recorded them
        try:
            gflops = (OmegaConf.load(hparams) or {}).get("model/gflops")
        except Exception:  # noqa: BLE001 - best effort
            continue
        if isinstance(gflops, (int, float)):
            out["gflops"] = float(gflops)
    return out


HISTORY_META = ("step", "images_seen", "final", "seconds")  # eval-history keys that are not metrics


def as_of_step(runs: list[Run], step: int) -> tuple[list[Run], list[Run]]:
    """Every run as it was at ``step``: its evaluation there stands in for its final values, so runs of
    different lengths, or still running, compare at equal steps (constant learning rate: a run's state
    at step N does not depend on how long it goes on). Returns (those runs, those left out: failed, no
    evaluation at that step, or no known Gflops)."""
    kept, left = [], []
    for run in runs:
        row = next((h for h in run.history if h.get("step") == step), None)
        gflops = run.summary.get("gflops")
        if run.status == "failed" or row is None or not isinstance(gflops, (int, float)):
            left.append(run)
            continue
        metrics = {
            k: v
            for k, v in row.items()
            if k not in HISTORY_META and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        seen = int(row.get("images_seen") or 0)
        summary = {
            **run.summary,
            "status": "finished",
            "steps": step,
            "images_seen": seen,
            "train_compute_gflops": training_compute(gflops, seen),
            "metrics": metrics,
            "as_of_step": step,
            "final_loss": None,
            "wall_seconds": None,
        }  # those describe the whole run, not step N
        kept.append(Run(run.path, run.name, "finished", summary, [h for h in run.history if h.get("step", 0) <= step]))
    return kept, left


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no file. A damaged one is refused, naming it:
    ditlab writes summaries atomically, so it is not a run being written but a file to repair."""
    if not path.is_file():
        return None
    fix = "repair it, or move it out of the run folder (the run is then listed as unfinished)"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise DitlabError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    except ValueError as e:
        raise DitlabError(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise DitlabError(f"{path} holds a JSON {type(data).__name__}, not the object a run's summary is; {fix}")
    return data


def _read_history(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
