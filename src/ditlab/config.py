"""Where the configs live and how to compose them: the one module every layer may import.

Importing it registers the two resolvers the configs use: ``${ditlab.options_hash:}``, the part of
the default run name that tells runs apart (:mod:`ditlab.run_names`), and ``${ditlab.user_cache:}``,
the default ``paths.cache_dir`` (:mod:`ditlab.user_cache`). It imports nothing else from ditlab (and
those two import nothing that imports it), so the console scripts, the tools, the model loaders and
the tests all reach the configs without reaching each other (no import loops through the CLI).
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from hydra.types import RunMode
from omegaconf import OmegaConf

from ditlab.run_names import options_hash
from ditlab.user_cache import default_cache_dir

# The YAML configs ship inside the package (package data ``ditlab/conf/**``; in a checkout,
# src/ditlab/conf links to the root conf/), so an installed wheel finds them wherever it runs.
CONFIG_DIR = str(files("ditlab") / "conf")


def compose(config_name: str | None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The packaged ``conf/<config_name>.yaml`` composed with ``overrides``, outside a Hydra app
    (tools, notebooks and tests build runs exactly as the console scripts do). ``config_name=None``
    composes only what the overrides select, e.g. ``compose(None, ["+model=XL"])``.

    Hydra's global state is restored afterwards, so a call from inside a running Hydra app (a tool
    that loads a checkpoint) leaves that app's own composition untouched.
    """
    saved = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base=None, config_dir=CONFIG_DIR):
            return hydra_compose(config_name, overrides=list(overrides))
    finally:
        restore_gh_from_backup(saved)


def in_multirun() -> bool:
    """True inside one job of a ``-m`` sweep (a Hydra multirun)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@lru_cache(maxsize=1)
def _default_train() -> Any:
    return compose("train")


def _options_hash(*, _root_: Any) -> str:
    """``${ditlab.options_hash:}``: what sets this run apart from ``conf/train.yaml`` as shipped."""
    return options_hash(_root_, _default_train())


OmegaConf.register_new_resolver("ditlab.options_hash", _options_hash, replace=True)
OmegaConf.register_new_resolver("ditlab.user_cache", default_cache_dir, replace=True)
