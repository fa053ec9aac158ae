"""One sweep job: run ``train(cfg)``; in a multirun, a failure is recorded and the sweep goes on.

With ``@hydra.main`` a ``sys.exit`` (ditlab's one-line error exit) or an exception ends the whole
sweep in the basic launcher. Inside a multirun the job instead writes ``summary.json`` with
``status: failed`` and the error into its own folder, finishes its wandb run with exit code 1,
and returns; :class:`ditlab.sweep.hydra_callback.SweepSummary` counts the failures at the end and
sets the exit status. A single run keeps the usual behaviour (one line, exit status 2).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ditlab.config import in_multirun
from ditlab.errors import DitlabError
from ditlab.report.collect import FAILURE_FILE  # the record_failure file, named by its reader

log = logging.getLogger("ditlab")


def run_job(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    from ditlab.training.wandb_logger import finish_wandb  # lazy for start-up: it loads Lightning

    multirun = in_multirun()
    finished = finished_run(cfg)
    if finished is not None:  # rerunning a sweep into its folder: finished points are not trained again
        log.info("%s already finished its %s steps: skipped (ckpt_path=auto)", cfg.paths.output_dir, finished["steps"])
        return finished
    try:
        if multirun:
            check_sweep_strategy(cfg)
        return task(cfg)
    except Exception as e:
        finish_wandb(exit_code=1)
        lost = _lost_peer(cfg, e, multirun)  # a DDP peer died: one line with the resume command
        if not multirun:
            if lost is not None:
                raise lost from e
            raise
        return record_failure(cfg, lost or e)


def finished_run(cfg: DictConfig) -> dict[str, Any] | None:
    """With ``ckpt_path=auto`` (also a requeued SLURM job's default), the ``summary.json`` of a run in
    this folder that already finished the steps asked for; None when there is work to do."""
    ckpt_path = str(cfg.get("ckpt_path"))
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if not (ckpt_path == "auto" or (ckpt_path in ("None", "", "null") and requeued)):
        return None
    try:
        summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
        steps, max_steps = int(summary["steps"]), int(cfg.trainer.max_steps)
        budget = (cfg.get("compute") or {}).get("budget_gflops")
        plan = summary.get("compute_plan") or {}
    except Exception:  # noqa: BLE001 - no summary or a damaged one: train (the run's own checks speak)
        return None
    if summary.get("status") != "finished":
        return None
    if budget is not None and plan.get("budget_gflops") == float(budget):  # compute-matched: the plan's steps
        max_steps = int(plan.get("max_steps", max_steps))
    return summary if steps >= max_steps else None


def check_sweep_strategy(cfg: DictConfig) -> None:
    """Inside SLURM (a submitit preset) one task per device; elsewhere no multi-device ``ddp`` in a
    multirun (Lightning would re-run the whole sweep in every extra process; see docs/sweeps.md)."""
    strategy, devices = str(cfg.trainer.get("strategy")), cfg.trainer.get("devices")
    slurm_tasks = os.environ.get("SLURM_NTASKS_PER_NODE")
    if slurm_tasks is not None:
        tasks = int(slurm_tasks.split("(")[0])  # e.g. "4" or "4(x2)"
        if str(devices) != str(tasks):
            raise DitlabError(
                f"trainer.devices={devices} but SLURM started {tasks} task(s) per node; set trainer.devices={tasks} "
                "(the launcher preset's tasks_per_node)"
            )
        return
    if strategy.startswith("ddp") and not strategy.startswith("ddp_spawn") and str(devices) not in ("1", "None"):
        raise DitlabError(
            f"trainer.strategy={strategy} with trainer.devices={devices} inside a multirun would re-run the whole "
            "sweep in every extra process; use one device per job, hydra/launcher=torchrun (each job its own "
            "DDP group), trainer.strategy=ddp_spawn, or a SLURM launcher preset (hydra/launcher=slurm_4gpu)"
        )


def _lost_peer(cfg: DictConfig, error: Exception, multirun: bool) -> DitlabError | None:
    import torch.distributed as dist  # lazy for start-up: cli.py imports this module; torch only on a failure

    from ditlab.training.peer_failure import lost_peer_error

    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank = int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)
        world_size = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    try:
        run_dir = Path(cfg.paths.output_dir).resolve()
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    except Exception:  # noqa: BLE001 - a broken config: the original error stands
        return None
    return lost_peer_error(
        error, rank=rank, world_size=world_size, run_dir=run_dir, overrides=overrides, multirun=multirun
    )


def record_failure(cfg: DictConfig, error: Exception) -> dict[str, Any]:
    """Write the failed job's record into its run folder and say so in one line."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    record: dict[str, Any] = {"status": "failed", "error": message, "error_type": type(error).__name__}
    record.update(_describe(cfg))
    if not isinstance(error, DitlabError):
        record["traceback"] = traceback.format_exception(type(error), error, error.__traceback__)[-6:]
        log.error("sweep job failed", exc_info=error)
    run_dir = Path(record.get("run_dir") or ".")
    path = run_dir / "summary.json"
    if path.exists():  # never replace a finished run's summary
        path = run_dir / FAILURE_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    except OSError as e:
        log.error("could not write %s: %s", path, e)
    print(
        f"ditlab: error in sweep job {record.get('job', '?')} ({record.get('run_name')}): {message} "
        f"[recorded in {path}; the sweep continues]",
        file=sys.stderr,
    )
    return record


def _describe(cfg: DictConfig) -> dict[str, Any]:
    """What the report needs to place a failed run in its table; every field is best effort."""
    from ditlab.models.accounting import describe_model  # lazy for start-up: it loads torch

    parts = (  # each a dict of fields; a part whose config is broken is left out
        lambda: {"run_name": cfg.run_name},
        lambda: {"run_dir": str(Path(cfg.paths.output_dir).resolve())},
        lambda: describe_model(cfg.model, cfg.block),  # model tag, block, patch: as in summary.json
        lambda: {"seed": int(cfg.seed)},
        lambda: {"job": int(HydraConfig.get().job.num)},
        lambda: {"overrides": list(HydraConfig.get().overrides.task)},
    )
    out: dict[str, Any] = {}
    for part in parts:
        try:
            out.update(part())
        except Exception:  # noqa: BLE001 - a broken config is the failure being recorded
            pass
    return out
