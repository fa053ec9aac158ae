"""The two scaling plots (matplotlib, Agg): Gflops vs metric, training compute vs metric + power law."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ditlab.report.analysis import points, power_law_fit
from ditlab.report.collect import Run

MARKERS = {2: "o", 4: "s", 8: "^", 1: "D", 16: "v"}


def _pyplot():
    from ditlab.extras import require

    require("report", "ditlab-report's plots")
    import matplotlib  # lazy for start-up: matplotlib loads only when a plot is drawn (Agg first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(run: Run) -> str:
    s = run.summary
    return f"{s.get('model', run.name)}" + (f" {s['block']}" if s.get("block") not in (None, "adaln_zero") else "")


def _scatter(ax, runs: list[Run], x: np.ndarray, y: np.ndarray) -> None:
    """Colour = model size, marker = patch size, each point labelled with its model."""
    sizes = list(dict.fromkeys(str(r.summary.get("model", "?")).split("/")[0] for r in runs))
    colors = {s: f"C{i % 10}" for i, s in enumerate(sizes)}
    for run, xi, yi in zip(runs, x, y):
        size = str(run.summary.get("model", "?")).split("/")[0]
        ax.scatter(xi, yi, color=colors[size], marker=MARKERS.get(run.summary.get("patch_size"), "o"), s=48, zorder=3)
        ax.annotate(_label(run), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for size in sizes:
        ax.scatter([], [], color=colors[size], marker="o", label=size)
    for patch in sorted({r.summary.get("patch_size") for r in runs if r.summary.get("patch_size") in MARKERS}):
        ax.scatter([], [], color="0.4", marker=MARKERS[patch], label=f"patch {patch}")


def gflops_plot(runs: list[Run], metric: str, path: Path, title: str) -> bool:
    x, y, used = points(runs, "gflops", metric)
    if not len(x):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    _scatter(ax, used, x, y)
    ax.set_xscale("log")
    _finish(plt, fig, ax, path, "model Gflops per image (forward, log scale)", metric, title)
    return True


def compute_plot(runs: list[Run], metric: str, path: Path, title: str) -> dict[str, Any] | None:
    """Final values vs Gflops x 3 x images seen, each run's eval curve behind them, and the fit."""
    x, y, used = points(runs, "train_compute_gflops", metric)
    if not len(x):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for run in used:  # training curves from eval/metrics.jsonl (Gflops x 3 x images seen at each evaluation)
        curve = [(run.summary["gflops"] * 3 * h["images_seen"], h[metric]) for h in run.history
                 if h.get(metric) is not None and h.get("images_seen")]
        if len(curve) > 1:
            cx, cy = zip(*curve)
            ax.plot(cx, cy, color="0.75", lw=0.8, zorder=1)
    _scatter(ax, used, x, y)
    fit = power_law_fit(x, y)
    if fit:
        grid = np.geomspace(x.min(), x.max(), 50)
        ax.plot(grid, fit["a"] * grid ** fit["b"], "k--", lw=1, zorder=2,
                label=f"fit: {metric} = {fit['a']:.3g} · C^{fit['b']:.3f}")
    ax.set_xscale("log")
    if (y > 0).all() and y.max() > 3 * y.min():  # log-log when the values span a real range
        ax.set_yscale("log")
    _finish(plt, fig, ax, path, "training compute C = Gflops x 3 x images seen (log scale)", metric, title)
    return fit or {}


def _finish(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    ax.legend(fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _readable_log_ticks(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _readable_log_ticks(ax) -> None:
    """Label log axes at 1, 2, 5 x 10^k in plain numbers; matplotlib's default labels every minor
    tick when the data span about a decade, and they overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # lazy: see _pyplot

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
