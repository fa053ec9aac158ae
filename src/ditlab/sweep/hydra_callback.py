"""Hydra callback (conf/hydra/default.yaml): after a multirun, count finished and failed jobs.

When a multirun starts, it also makes submitit work on Slurm clusters without accounting
(:mod:`ditlab.sweep.slurm_status`).

Runs in the launching process whatever the launcher (basic, joblib, submitit), once every job
has returned. A sweep with a failed job exits with status 1 after all other jobs have run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ditlab.report.collect import collect_runs


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "submitit" in str(config.hydra.launcher.get("_target_", "")):
            from ditlab.sweep.slurm_status import install  # squeue where sacct has no accounting

            install()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        runs = collect_runs(sweep_dir)
        if not runs:  # not a ditlab-train sweep
            return
        counts = {s: sum(r.status == s for r in runs) for s in ("finished", "failed", "unfinished")}
        print(
            f"ditlab: sweep {sweep_dir}: {counts['finished']} finished, {counts['failed']} failed, "
            f"{counts['unfinished']} unfinished. Tables and plots: ditlab-report {sweep_dir}",
            file=sys.stderr,
        )
        for run in runs:
            if run.status == "failed":
                print(f"  failed: {run.name}: {run.summary.get('error')}", file=sys.stderr)
        if counts["failed"]:
            sys.exit(1)
