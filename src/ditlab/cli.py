"""Console entry points. Each wraps a plain function with ``@hydra.main`` and turns a
:class:`~ditlab.errors.DitlabError` into one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import OmegaConf

# compose() is documented as ``ditlab.cli.compose``; it lives in ditlab.config with the config location.
from ditlab.config import CONFIG_DIR, compose, in_multirun  # noqa: F401  (compose: re-exported)
from ditlab.errors import one_line_errors
from ditlab.extras import require
from ditlab.run_names import check_run_name
from ditlab.schema import check_command_line, check_config
from ditlab.sweep.jobs import run_job  # in a multirun, a failed job is recorded and the sweep goes on

# --help lists these groups per command (conf/hydra/help/ditlab.yaml); options that are internal
# base configs of their group are left out.
HELP_GROUPS = {
    "train": [
        "model",
        "block",
        "objective",
        "aux",
        "sampler",
        "optim",
        "lr_schedule",
        "data",
        "encoder",
        "trainer",
        "logger",
        "callbacks",
        "eval",
        "experiment",
        "hydra/launcher",
    ],
    "sample": ["sampler", "encoder"],
    "export": ["sampler"],
    "extract": ["data", "encoder", "aux"],
    "flops": ["model", "block"],
}
INTERNAL_OPTIONS = {"trainer": {"default"}, "eval": {"base"}}


def help_text(config_name: str) -> str:
    """The usage lines of ``conf/<config_name>.yaml`` and the groups its command offers."""
    lines = []
    for line in Path(CONFIG_DIR, f"{config_name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    lines += ["", "== Choices (group=option) =="]
    for group in HELP_GROUPS.get(config_name, []):
        folder = Path(CONFIG_DIR, group)
        options = sorted(p.stem for p in folder.glob("*.yaml") if p.stem not in INTERNAL_OPTIONS.get(group, ()))
        note = " (with -m)" if group == "hydra/launcher" else ""
        lines.append(f"{group}{note}: {', '.join(['basic', *options] if note else options)}")
    return "\n".join(lines) + "\n"


def _hydra_entry(config_name: str, task: Callable[[Any], Any]) -> Callable[[], None]:
    OmegaConf.register_new_resolver("ditlab_help", help_text, replace=True)  # used by --help only

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=config_name)
    def _main(cfg):
        with one_line_errors():
            if config_name != "train" or not in_multirun():  # a training sweep's jobs: checked in the job
                check_config(config_name, cfg)
            return task(cfg)

    def _checked_main() -> None:
        with one_line_errors():  # types, ranges and typos: one line, before Hydra creates a folder or log
            check_command_line(config_name, sys.argv[1:])
        _main()

    return _checked_main


def _train(cfg):
    from ditlab.training.quiet import quiet_font_cache  # lazy, as the next line

    quiet_font_cache()  # before the import below, which may build matplotlib's font cache (a line in cli.log)
    from ditlab.training.train import train  # lazy for start-up: `--cfg job` and --help never load torch

    # Lightning prints through its own handler; stop the same lines reaching Hydra's root handler.
    logging.getLogger("lightning.pytorch").propagate = False
    return run_job(train, cfg)


def check_launcher_extras(argv: list[str]) -> None:
    """A multirun whose launcher plugin is not installed stops with one line naming the extra
    (Hydra would only say the launcher config is missing). Looks at ``hydra/launcher=`` and at the
    launcher an ``experiment=`` recipe selects."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return
    names = [a.split("=", 1)[1] for a in argv if a.startswith("hydra/launcher=")]
    for a in argv:
        if a.startswith("experiment="):
            recipe = Path(CONFIG_DIR, "experiment", a.split("=", 1)[1] + ".yaml")
            text = recipe.read_text() if recipe.is_file() else ""
            names += re.findall(r"override /hydra/launcher: *(\w+)", text)
    for name in names:
        if name.startswith("slurm"):
            require("slurm", f"hydra/launcher={name}")
        elif name == "local_parallel":
            require("local_parallel", f"hydra/launcher={name}")


def check_run_names(argv: list[str]) -> None:
    """``run_name=...`` on the command line names a folder inside the runs folder; checked before
    Hydra creates that folder (Hydra would create ``runs/../x`` or fail on a long name with a trace)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [a for a in argv if a.split("=", 1)[0].lstrip("+~") == "run_name" and "=" in a]
    if not given:
        return
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except Exception:  # Hydra reports its own syntax errors
        return
    for override in overrides:
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            check_run_name(value)


def train_main() -> None:
    logging.getLogger("ditlab").setLevel(logging.INFO)
    with one_line_errors():
        check_launcher_extras(sys.argv[1:])
        check_run_names(sys.argv[1:])
    _hydra_entry("train", _train)()


def _extract(cfg, existed: set[Path]):
    from hydra.core.hydra_config import HydraConfig

    from ditlab.cache.extract import extract  # lazy for start-up: --help never loads torch
    from ditlab.checkpoints.run_attempt import leave_no_log_on_error

    # Hydra opened <cache_dir>/logs/extract_rank*.log before any check: a refused call takes it back,
    # and the cache folder too when Hydra created it (never a folder the user had, empty or not:
    # ``existed``, the candidate cache folders that existed before Hydra started).
    with leave_no_log_on_error(Path(HydraConfig.get().runtime.output_dir), keep=existed):
        extract(cfg)


def extract_main() -> None:
    from ditlab.user_cache import default_cache_dir  # lazy, as the other imports of the entry points

    logging.getLogger("ditlab").setLevel(logging.INFO)
    named = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith(("cache_dir=", "paths.cache_dir="))]
    candidates = [Path(p).expanduser().resolve() for p in [*named, default_cache_dir()] if p]
    existed = {p for p in candidates if p.exists()}
    _hydra_entry("extract", lambda cfg: _extract(cfg, existed))()


if __name__ == "__main__":  # `python -m ditlab.cli <overrides>` is one ditlab-train run (the torchrun launcher's job)
    train_main()
