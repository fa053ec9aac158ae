"""Console entry points. Each wraps a plain function with ``@hydra.main`` and turns a
:class:`~ditlab.errors.DitlabError` into one line on stderr and exit status 2."""

from __future__ import annotations

import logging
from typing import Any, Callable

import hydra

# compose() is documented as ``ditlab.cli.compose``; it lives in ditlab.config with the config location.
from ditlab.config import CONFIG_DIR, compose  # noqa: F401  (re-exported)
from ditlab.errors import one_line_errors
from ditlab.sweep.jobs import run_job  # in a multirun, a failed job is recorded and the sweep goes on


def _hydra_entry(config_name: str, task: Callable[[Any], Any]) -> Callable[[], None]:
    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=config_name)
    def _main(cfg):
        with one_line_errors():
            return task(cfg)

    return _main


def _train(cfg):
    from ditlab.training.train import train  # lazy for start-up: `--cfg job` and --help never load torch

    # Lightning prints through its own handler; stop the same lines reaching Hydra's root handler.
    logging.getLogger("lightning.pytorch").propagate = False
    return run_job(train, cfg)


def train_main() -> None:
    logging.getLogger("ditlab").setLevel(logging.INFO)
    _hydra_entry("train", _train)()


def _extract(cfg):
    from ditlab.cache.extract import extract  # lazy for start-up: --help never loads torch

    extract(cfg)


def extract_main() -> None:
    logging.getLogger("ditlab").setLevel(logging.INFO)
    _hydra_entry("extract", _extract)()
