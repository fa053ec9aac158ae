"""What a run does not print, and the lines of ditlab's own it always prints. Scoped to ``train()``:
importing ditlab changes no warning filter and no logger.

Dropped where each line arises (every one is a fixed start-up message that says nothing about the run):

* Lightning's ``The `srun` command is available on your system but is not used`` (a warning on every
  machine with Slurm installed; ditlab's Slurm launchers start ranks with srun themselves);
* Lightning's ``GPU available: ... / TPU available: ...`` and its ``💡 Tip`` adverts (litlogger,
  litmodels), which reach the terminal whenever the caller has not configured logging (API use);
* ``Initializing distributed: GLOBAL_RANK: r, MEMBER: ...`` from every rank but rank 0 (the same
  start-up line once per process); rank 0's line and the "All distributed processes registered" block stay;
* matplotlib's ``Matplotlib is building the font cache`` and ``generated new fontManager`` (a one-off
  cache build, not about the run);
* the second copy of every Lightning line when the caller configured logging (Hydra in the console
  scripts): the ``lightning`` package always adds its own console handler *and* propagates to the
  root logger, so e.g. ``Initializing distributed`` came out twice. While the root logger has a
  handler, Lightning's own console handler is set aside.

ditlab's own INFO lines (model size, resume, evaluations, early stopping, "run finished") reach stderr
when ``train()`` is called from Python with logging unconfigured, as Lightning's do; a caller that
configured logging (or Hydra, in the console scripts) keeps its own handlers.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator

NOISY_WARNINGS = (r"The `srun` command is available on your system but is not used",)
NOISY_LINES = re.compile(
    r"(GPU available: |TPU available: |HPU available: |💡 Tip: |Initializing distributed: GLOBAL_RANK: [1-9]"
    r"|Matplotlib is building the font cache|generated new fontManager)"
)
# The loggers those lines are emitted on (a logger's filter sees only its own records, not its children's).
NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",  # rank_zero_info of Lightning and Fabric (one shared logger)
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.distributed",  # "Initializing distributed: ..." on every rank
    "matplotlib.font_manager",
)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job_logging format


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISY_LINES.match(record.getMessage())


def quiet_font_cache() -> None:
    """For the console scripts' own process: importing the training stack imports matplotlib (through
    torchmetrics), which may build its font cache before ``train()`` starts; drop those two lines."""
    font_log = logging.getLogger("matplotlib.font_manager")
    if not any(isinstance(f, DropNoise) for f in font_log.filters):
        font_log.addFilter(DropNoise())


@contextlib.contextmanager
def quiet_run() -> Iterator[None]:
    """Inside: the noise above is dropped and ditlab's INFO lines are shown; outside: as before."""
    drop = DropNoise()
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    ditlab_log = logging.getLogger("ditlab")
    own_handler = None
    level = ditlab_log.level
    if not ditlab_log.hasHandlers():  # nobody configured logging: show ditlab's lines as Lightning shows its own
        own_handler = logging.StreamHandler(sys.stderr)
        own_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        ditlab_log.addHandler(own_handler)
    if ditlab_log.getEffectiveLevel() > logging.INFO:
        ditlab_log.setLevel(logging.INFO)
    lightning_log = logging.getLogger("lightning")
    set_aside = list(lightning_log.handlers) if logging.getLogger().handlers and lightning_log.propagate else []
    for handler in set_aside:
        lightning_log.removeHandler(handler)
    with warnings.catch_warnings():
        for message in NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)
            for handler in set_aside:
                lightning_log.addHandler(handler)
            if own_handler is not None:
                ditlab_log.removeHandler(own_handler)
            ditlab_log.setLevel(level)
