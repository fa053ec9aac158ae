"""Weights & Biases: one wandb run per ditlab run, grouped by sweep, dashboards without post-processing.

* mode (``logger.wandb.mode`` or ``WANDB_MODE``): ``online`` (needs ``wandb login`` / ``WANDB_API_KEY``),
  ``offline`` (no key; files under ``<run>/wandb/offline-run-*``, upload later with ``wandb sync``),
  ``disabled`` (nothing is written).
* the run is named after ``run_name``, grouped by the multirun sweep folder (``logger.wandb.group``
  overrides), tagged with size/patch, block, objective and data; its config is the resolved Hydra
  config.
* ``model/*`` (params, Gflops, tokens) go into the run *summary* as well as the config, and at the
  end the whole ``summary.json`` is copied into the summary (``eval/<metric>`` = the final value,
  ``train_compute_gflops``, ``images_seen``...), so a project scatter of ``model/gflops`` against
  ``eval/fid`` (or ``eval/fd_digits``) is one click.
* every run is finished when it ends (a sweep job that fails is finished with exit code 1), so a
  multirun makes one wandb run per job instead of appending every job to the first.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ditlab.config import in_multirun
from ditlab.errors import DitlabError

MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id.txt"
SUMMARY_KEYS = (
    "status",
    "params",
    "gflops",
    "tokens",
    "steps",
    "images_seen",
    "train_compute_gflops",
    "final_loss",
    "fit_seconds",
    "wall_seconds",
)


def resolve_mode(configured: str | None) -> str:
    mode = configured or os.environ.get("WANDB_MODE") or "online"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # wandb's older spellings
    if mode not in MODES:
        raise DitlabError(f"logger.wandb.mode={mode} (or WANDB_MODE) must be one of {', '.join(MODES)}")
    return mode


def sweep_group() -> str | None:
    """The multirun sweep folder's name (one wandb group per sweep), None for a single run."""
    return Path(str(HydraConfig.get().sweep.dir)).name if in_multirun() else None


class DitlabWandbLogger(WandbLogger):
    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(params)
        # The x-axes of scaling plots belong in the run summary, where project charts read them.
        for key, value in dict(params).items():
            if str(key).startswith("model/") and isinstance(value, (int, float, str)):
                self.experiment.summary[key] = value


def build_wandb_logger(cfg: DictConfig, run_dir: Path, full_cfg: DictConfig) -> Any:
    import wandb

    mode = resolve_mode(cfg.get("mode"))
    logger = DitlabWandbLogger(
        project=cfg.project,
        entity=cfg.get("entity"),
        name=full_cfg.run_name,
        group=cfg.get("group") or sweep_group(),
        tags=[str(t) for t in (cfg.get("tags") or [])],
        job_type="train",
        save_dir=str(run_dir),
        mode=mode,
        id=_run_id(run_dir, resuming=full_cfg.get("ckpt_path") not in (None, "", "null")),
        resume="allow",
        config=OmegaConf.to_container(full_cfg, resolve=True),
    )
    # Lightning always passes anonymous=None, and wandb >= 0.19 warns "The anonymous setting has no effect"
    # for any value; left out, wandb's default is the same.
    if logger._wandb_init.get("anonymous", "unset") is None:
        del logger._wandb_init["anonymous"]
    if rank_zero_only.rank == 0:
        try:
            run = logger.experiment  # start now, so a missing key fails before training, with one line
        except (wandb.errors.UsageError, wandb.errors.AuthenticationError) as e:
            raise DitlabError(
                f"wandb could not start in {mode} mode ({str(e).splitlines()[0]}); run `wandb login` or set "
                "WANDB_API_KEY, or use logger.wandb.mode=offline (sync later) or logger.wandb.mode=disabled"
            ) from None
        # Summary value of each metric = its last (final) evaluation, the number in summary.json.
        for name in full_cfg.eval.metrics or []:
            run.define_metric(f"eval/{name}", step_metric="trainer/global_step", summary="last")
    return logger


def publish_summary(loggers: list[Any], summary: dict[str, Any]) -> None:
    """Copy ``summary.json`` into the wandb run summary and finish the run (no-op without wandb)."""
    logger = next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)
    if logger is None or logger._experiment is None:
        return
    run = logger.experiment
    values: dict[str, Any] = {k: summary[k] for k in SUMMARY_KEYS if summary.get(k) is not None}
    values.update({f"model/{k}": summary[k] for k in ("params", "gflops", "tokens") if k in summary})
    values.update({f"eval/{k}": v for k, v in (summary.get("metrics") or {}).items()})
    if summary.get("metrics_recipe"):
        values["eval/recipe"] = summary["metrics_recipe"]
    for key, value in values.items():
        run.summary[key] = value
    finish_wandb(exit_code=0)


def finish_wandb(exit_code: int = 0) -> None:
    """End the current wandb run, if any (each sweep job gets its own run).

    ``finish()`` returns before wandb-core has written an offline run's transaction log;
    ``teardown()`` waits for it, so the run is complete on disk when the job ends (the next run in
    the same process starts a new wandb-core, about a second)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish(exit_code=exit_code)
        wandb.teardown()


def _run_id(run_dir: Path, resuming: bool) -> str:
    """A resumed run continues its wandb run; a new (or overwritten) run starts a new one."""
    path = run_dir / RUN_ID_FILE
    if resuming and path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]

    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id
