"""Console entry points. Each wraps a plain function with ``@hydra.main`` and turns a
:class:`~ditlab.errors.DitlabError` into one line on stderr and exit status 2."""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Any, Callable

# The YAML configs ship inside the package (package data ``ditlab/conf/**``; in a checkout,
# src/ditlab/conf links to the root conf/), so an installed wheel finds them wherever it runs.
CONFIG_DIR = str(files("ditlab") / "conf")


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The packaged ``conf/<config_name>.yaml`` composed with ``overrides``, outside a Hydra app
    (tools, notebooks and tests build runs exactly as the console scripts do)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base=None, config_dir=CONFIG_DIR):
        return hydra_compose(config_name, overrides=list(overrides))


def _hydra_entry(config_name: str, task: Callable[[Any], Any]) -> Callable[[], None]:
    import hydra

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=config_name)
    def _main(cfg):
        from ditlab.errors import one_line_errors

        with one_line_errors():
            return task(cfg)

    return _main


def _train(cfg):
    from ditlab.training.train import train  # imported lazily: `--cfg job` and --help stay fast

    # Lightning prints through its own handler; stop the same lines reaching Hydra's root handler.
    logging.getLogger("lightning.pytorch").propagate = False
    from ditlab.sweep.jobs import run_job  # in a multirun, a failed job is recorded and the sweep goes on

    return run_job(train, cfg)


def train_main() -> None:
    logging.getLogger("ditlab").setLevel(logging.INFO)
    _hydra_entry("train", _train)()


def _extract(cfg):
    from ditlab.cache.extract import extract

    extract(cfg)


def extract_main() -> None:
    logging.getLogger("ditlab").setLevel(logging.INFO)
    _hydra_entry("extract", _extract)()
