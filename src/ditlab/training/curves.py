"""``<run>/curves.png``: the training loss and every evaluation metric of one run, against steps
(bottom axis) and images seen (top axis). Written at the end of every run from ``metrics.csv`` and
``eval/metrics.jsonl``; needs matplotlib (``pip install 'ditlab[report]'``), else it is skipped with
a log line (a plot never fails a finished run).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from ditlab.atomic import replace_atomically
from ditlab.extras import available
from ditlab.training.eval_outputs import EVAL_DIR, HISTORY_FILE

log = logging.getLogger("ditlab")
CURVES_FILE = "curves.png"
LOSS_KEYS = ("train/loss",)
NOT_METRICS = {"step", "images_seen", "final", "seconds", "samples_per_process", "recipe"}

Series = dict[str, tuple[list[int], list[float]]]


def collect_series(run_dir: Path) -> Series:
    """name -> (steps, values): ``train/loss`` from metrics.csv, then each eval metric (eval/<name>)."""
    series: Series = {}
    path = run_dir / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for key in LOSS_KEYS:
                    value = _number(row.get(key))
                    if value is not None and row.get("step") not in (None, ""):
                        steps, values = series.setdefault(key, ([], []))
                        steps.append(int(float(row["step"])))
                        values.append(value)
    path = run_dir / EVAL_DIR / HISTORY_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            for key, value in row.items():
                if key not in NOT_METRICS and _number(value) is not None:
                    steps, values = series.setdefault(f"eval/{key}", ([], []))
                    steps.append(int(row["step"]))
                    values.append(float(value))
    return series


def write_curves(run_dir: Path, images_per_step: int) -> list[str]:
    """Draw ``curves.png`` (one panel per series); returns the names drawn ([] when nothing was)."""
    series = collect_series(run_dir)
    if not series:
        return []
    if not available("report"):
        log.info("curves.png skipped: it needs matplotlib (pip install 'ditlab[report]')")
        return []
    import matplotlib  # lazy for start-up: only the end of a run draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional (ditlab[report]), and slow to import
    from matplotlib.ticker import EngFormatter, MaxNLocator

    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    last_step = max(max(steps) for steps, _ in series.values())
    for ax, (name, (steps, values)) in zip(axes.flat, series.items()):
        _draw_series(ax, steps, values, last_step)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(name.split("/", 1)[-1])
        ax.set_xlim(0, last_step * 1.04)  # every panel on the run's step range
        ax.grid(alpha=0.3)
        if images_per_step > 0:  # the same axis in images seen (constant images per optimizer step)
            top = ax.secondary_xaxis("top", functions=(lambda s: s * images_per_step, lambda i: i / images_per_step))
            top.xaxis.set_major_locator(MaxNLocator(nbins=4))  # few, short numbers: they never overlap
            top.xaxis.set_major_formatter(EngFormatter(sep=""))
            top.set_xlabel("images seen")
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    replace_atomically(run_dir / CURVES_FILE, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return list(series)


def _draw_series(ax, steps: list[int], values: list[float], last_step: int) -> None:
    """Markers and a line; a metric evaluated once (the final evaluation only) is a marker on a dashed
    level line across the run with its value written beside it, not a lone dot."""
    ax.plot(steps, values, marker="o" if len(steps) <= 20 else None, lw=1.2)
    if len(set(steps)) == 1:
        ax.axhline(values[-1], ls="--", lw=1, color="C0", alpha=0.6)
        ax.annotate(
            f"{values[-1]:.4g}", (steps[-1], values[-1]), textcoords="offset points", xytext=(-6, 6), ha="right"
        )


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None
