"""Progress bars for ditlab's long loops: counts, rate and ETA (tqdm, on stderr).

Every long loop (sampling, evaluation, real-image statistics, latent extraction) shows one bar on
the rank-0 process. One switch turns them all off for batch logs: ``progress=false`` on any
command (it sets :func:`enabled_if` for that command), or ``TQDM_DISABLE=1`` in the environment.
The training bar is Lightning's (``callbacks/progress_bar``), switched by the same option.

    from ditlab import progress
    with progress.bar(total=len(labels), desc="eval samples", unit="img") as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_enabled = True


def enabled() -> bool:
    """Whether bars are shown here: switched on, not disabled by TQDM_DISABLE, and on rank 0."""
    return _enabled and not disabled_by_environment() and _rank() == 0


def disabled_by_environment() -> bool:
    """``TQDM_DISABLE=1`` (tqdm's own switch), which also turns off the training bar."""
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def enabled_if(on: bool) -> Iterator[None]:
    """Bars on (``on``) or off for the duration of a command."""
    global _enabled
    before, _enabled = _enabled, bool(on) and _enabled
    try:
        yield
    finally:
        _enabled = before


def bar(total: int | None = None, desc: str | None = None, unit: str = "it", **kwargs: Any):
    """A tqdm bar (use as a context manager, ``update(n)``); disabled when bars are off."""
    from tqdm import tqdm

    if not is_terminal(sys.stderr):  # a log file: a line every LOG_INTERVAL_S seconds instead of a redraw
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled(), dynamic_ncols=True, file=stream(sys.stderr), **kwargs
    )


LOG_INTERVAL_S = 30.0
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # tqdm's cursor moves (ESC[A) between nested bars


def is_terminal(file: Any) -> bool:
    return bool(getattr(file, "isatty", lambda: False)())


def stream(file: Any) -> Any:
    """``file`` for a bar: itself on a terminal; elsewhere (a log file, Slurm's output, launcher.log) a
    wrapper that writes each redraw as one plain line, without the ``\\r`` and ``ESC[A`` a terminal needs."""
    return file if is_terminal(file) else LineStream(file)


class LineStream:
    def __init__(self, file: Any):
        self.file = file

    def write(self, text: str) -> int:
        for line in re.split(r"[\r\n]+", ANSI_ESCAPE.sub("", text)):
            if line.strip():
                self.file.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.file.flush()


def track(iterable: Iterable[T], total: int | None = None, desc: str | None = None, unit: str = "it") -> Iterator[T]:
    """``iterable`` with a bar counting its items."""
    with bar(total=total, desc=desc, unit=unit) as b:
        for item in iterable:
            yield item
            b.update(1)


def _rank() -> int:
    # The variables Lightning reads for its rank_zero_only (torchrun, SLURM); 0 in a single process.
    if "lightning" in sys.modules or "lightning.fabric" in sys.modules:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        return int(getattr(rank_zero_only, "rank", 0))
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0
