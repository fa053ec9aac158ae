"""The report on the sweep's wandb dashboard: one extra wandb run beside the sweep's training runs.

When the sweep's runs were logged with wandb (their ``config.yaml`` has ``logger.wandb``),
``ditlab-report`` logs one run in the same project and group (``job_type="report"``) whose summary is
``scaling.json`` (the fits, the joint law, the held-out predictions, the budget recommendation and the
calibration statement) and whose media are the report's plots (``wandb.Image``). The group is the one
the training runs used: ``logger.wandb.group``, else the sweep folder's name (ditlab's default).
The mode is the runs' ``logger.wandb.mode``, else ``WANDB_MODE``, else ``online`` when a wandb key is
set up (``WANDB_API_KEY`` or ``wandb login``'s ~/.netrc entry) and ``offline`` otherwise, so a report
never fails for want of a login; an offline run lands in ``<out>/wandb/offline-run-*`` (``wandb sync``
uploads it). ``wandb=false`` turns it off.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from ditlab.report.collect import Run

MODES = ("online", "offline", "disabled")


def sweep_wandb(runs: list[Run], root: Path) -> dict[str, Any] | None:
    """project, entity, group and mode of the sweep's wandb runs; None when no run logged to wandb."""
    from omegaconf import OmegaConf

    for run in runs:
        path = run.path / "config.yaml"
        if not path.is_file():
            continue
        loggers = OmegaConf.load(path).get("logger")
        wb = loggers.get("wandb") if hasattr(loggers, "get") else None
        if wb:
            mode = wb.get("mode") or os.environ.get("WANDB_MODE") or ("online" if _logged_in() else "offline")
            return {
                "project": wb.get("project") or "ditlab",
                "entity": wb.get("entity"),
                "group": wb.get("group") or root.resolve().name,
                "mode": {"dryrun": "offline", "run": "online"}.get(mode, mode),
            }
    return None


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def log_report(where: dict[str, Any], result: dict[str, Any], out: Path) -> dict[str, Any]:
    """Logs the report run; returns where it went (id, mode, project, group) or ``{"skipped": why}``."""
    plots = [*result.get("plots", {}).values(), *[v for k, v in result.get("joint_law", {}).items() if k == "plot"]]
    if where["mode"] not in MODES:
        return {"skipped": f"logger.wandb.mode={where['mode']} is none of {', '.join(MODES)}"}
    if where["mode"] == "disabled":
        return {"skipped": "logger.wandb.mode=disabled"}
    try:
        import wandb
    except ImportError:
        return {"skipped": "wandb is not installed (pip install 'ditlab[wandb]')"}
    try:
        run = wandb.init(
            project=where["project"], entity=where["entity"], group=where["group"], job_type="report",
            name=f"report-{where['group']}", mode=where["mode"], dir=str(out),
            config={"sweep": result.get("out"), "metric": result.get("metric")},
        )  # fmt: skip
    except Exception as e:  # a failed login or network: the report on disk stands, the dashboard is skipped
        return {"skipped": f"wandb could not start in {where['mode']} mode ({str(e).splitlines()[0]})"}
    run.summary.update(_summary(result))
    images = {f"report/{Path(p).stem}": wandb.Image(str(out / p)) for p in plots if (out / p).is_file()}
    if images:
        run.log(images)
    logged = {"id": run.id, **where}
    run.finish()
    wandb.teardown()  # waits for the offline transaction log, so it is complete on disk when the report returns
    return logged


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """scaling.json's entries, JSON-safe (wandb nests dicts; the paths of the plots are left as names)."""
    import json

    return json.loads(json.dumps({k: v for k, v in result.items() if k != "wandb"}, default=str))


def wandb_console(logged: dict[str, Any] | None) -> list[str]:
    if not logged:
        return []
    if "skipped" in logged:
        return [f"wandb: report not logged: {logged['skipped']}"]
    line = f"wandb: report run {logged['id']} ({logged['mode']}) in {logged['project']}, group {logged['group']}"
    if logged["mode"] == "offline":
        line += "; upload with `wandb sync <out>/wandb/offline-run-*`"
    return [line]
