"""Lightning callbacks selected by the ``callbacks`` group (lightning-hydra-template style).

Each entry of ``cfg.callbacks`` is ``{_target_: <class>, **kwargs}``, instantiated by Hydra; a new
callback is one YAML file in ``conf/callbacks/`` (or a folder added with ``hydra.searchpath``).
Entries that cannot work in this run are left out rather than failing it: progress bars when bars
are off, the learning-rate monitor without a logger.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from ditlab.errors import DitlabError
from ditlab.extras import require

log = logging.getLogger("ditlab")
# callback class name -> the optional feature (extra) it needs
NEEDS = {"RichProgressBar": "rich"}


def build_callbacks(cfg: DictConfig | None, *, progress: bool, has_logger: bool) -> list[Any]:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar

    callbacks = []
    for key, entry in (cfg or {}).items():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise DitlabError(f"callbacks.{key} needs a _target_ (the callback class) and its arguments")
        feature = NEEDS.get(str(entry._target_).rsplit(".", 1)[-1])
        if feature:
            require(feature, f"callbacks.{key} ({entry._target_})")
        try:
            callback = instantiate(entry)
        except InstantiationException as e:
            cause = e.__cause__ or e
            raise DitlabError(f"callbacks.{key} could not be built: {_first_line(cause)}") from None
        if isinstance(callback, ProgressBar) and not progress:
            continue
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            log.info("callbacks.%s left out: it needs a logger (logger=none)", key)
            continue
        callbacks.append(callback)
    return callbacks


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
