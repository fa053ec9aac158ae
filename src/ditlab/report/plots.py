"""The scaling plots (matplotlib, Agg): final values vs Gflops and vs training compute with their fits
and held-out predictions, and the compute-optimal frontier of the eval histories."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ditlab.report.analysis import points
from ditlab.report.collect import Run
from ditlab.report.fits import PowerLawFit
from ditlab.report.frontier import eval_points
from ditlab.report.predict import Study

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


def _scatter(ax, runs: list[Run], x: np.ndarray, y: np.ndarray, hollow: set[str] = frozenset()) -> None:
    """Colour = model size, marker = patch size, each point labelled with its model; runs named in
    ``hollow`` (held out of the fit) drawn as open markers."""
    sizes = list(dict.fromkeys(str(r.summary.get("model", "?")).split("/")[0] for r in runs))
    colors = {s: f"C{i % 10}" for i, s in enumerate(sizes)}
    for run, xi, yi in zip(runs, x, y):
        size = str(run.summary.get("model", "?")).split("/")[0]
        style = {"facecolors": "none", "edgecolors": colors[size]} if run.name in hollow else {"color": colors[size]}
        ax.scatter(xi, yi, marker=MARKERS.get(run.summary.get("patch_size"), "o"), s=48, zorder=3, **style)
        ax.annotate(_label(run), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for size in sizes:
        ax.scatter([], [], color=colors[size], marker="o", label=size)
    for patch in sorted({r.summary.get("patch_size") for r in runs if r.summary.get("patch_size") in MARKERS}):
        ax.scatter([], [], color="0.4", marker=MARKERS[patch], label=f"patch {patch}")


def fit_plot(runs: list[Run], study: Study, kind: str, path: Path, title: str) -> bool:
    """Final values against model Gflops (``kind="gflops"``) or training compute (``"compute"``, with
    each run's eval curve behind), the fit with its 95 % band, held-out runs as open markers
    with the fit's prediction and interval beside them."""
    key = "gflops" if kind == "gflops" else "train_compute_gflops"
    x, y, used = points(runs, key, study.metric)
    if not len(x):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if kind == "compute":  # training curves from eval/metrics.jsonl (Gflops x 3 x images seen at each evaluation)
        for run in used:
            curve = [(p.compute, p.value) for p in eval_points([run], study.metric)]
            if len(curve) > 1:
                ax.plot(*zip(*curve), color="0.8", lw=0.8, zorder=1)
    held = {r.name for r in study.held_out}
    _scatter(ax, used, x, y, hollow=held)
    fit = study.fits.get(kind)
    if isinstance(fit, PowerLawFit):
        grid = np.geomspace(x.min(), x.max(), 80)
        band = fit.interval(grid)
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color="k", alpha=0.12, lw=0, zorder=1, label="95 % band")
        ax.plot(
            grid,
            fit.predict(grid),
            "k--",
            lw=1,
            zorder=2,
            label=f"fit on {fit.n} runs: {fit.formula(study.metric, 'x')}",
        )
        for row in study.predictions:
            pred = row["fit"].get(kind)
            if pred:
                xi = row["gflops" if kind == "gflops" else "train_compute_gflops"]
                err = (
                    None if pred["lo"] is None else [[pred["predicted"] - pred["lo"]], [pred["hi"] - pred["predicted"]]]
                )
                ax.errorbar([xi * 1.04], [pred["predicted"]], yerr=err, fmt="x", color="C3", capsize=3, zorder=4)
        if study.predictions:
            ax.plot([], [], "x", color="C3", label="prediction for held-out runs (open markers)")
    elif isinstance(fit, str):
        ax.plot([], [], " ", label=fit)
    ax.set_xscale("log")
    if (y > 0).all() and y.max() > 3 * y.min():  # log-log when the values span a real range
        ax.set_yscale("log")
    xlabel = (
        "model Gflops per image (forward, log scale)"
        if kind == "gflops"
        else "training compute C = Gflops x 3 x images seen (log scale)"
    )
    _finish(plt, fig, ax, path, xlabel, study.metric, title)
    return True


def frontier_plot(runs: list[Run], study: Study, path: Path, title: str) -> bool:
    """Every run's eval curve against training compute, the frontier (best so far at each compute)
    and the frontier fit of the fit runs."""
    pts = eval_points(runs, study.metric)
    if not study.front:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    models = list(dict.fromkeys(p.model for p in pts))
    for i, model in enumerate(models):
        curve = sorted((p.compute, p.value) for p in pts if p.model == model)
        ax.plot(*zip(*curve), "-o", color=f"C{i % 10}", ms=3, lw=1, alpha=0.8, label=model)
    fx, fy = [p.compute for p in study.front], [p.value for p in study.front]
    ax.step(fx, fy, where="post", color="k", lw=1.6, zorder=3, label="frontier (best at <= C)")
    ax.scatter(fx, fy, color="k", s=14, zorder=4)
    fit = study.fits.get("frontier")
    if isinstance(fit, PowerLawFit):
        grid = np.geomspace(min(fx), max(p.compute for p in pts), 80)
        ax.plot(grid, fit.predict(grid), "k:", lw=1, label=f"frontier fit ({fit.n} pts): {fit.formula(study.metric)}")
    ax.set_xscale("log")
    values = np.array([p.value for p in pts])
    if (values > 0).all() and values.max() > 3 * values.min():
        ax.set_yscale("log")
    _finish(plt, fig, ax, path, "training compute C = Gflops x 3 x images seen (log scale)", study.metric, title)
    return True


def hours_plot(runs: list[Run], metric: str, path: Path, title: str) -> bool:
    """Final values vs the fit's accelerator time (summary ``device_hours``: GPU-hours on GPUs)."""
    x, y, used = points(runs, "device_hours", metric)
    if not len(x):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    _scatter(ax, used, x, y)
    ax.set_xscale("log")
    kinds = sorted({str(r.summary.get("device_type", "?")) for r in used})
    unit = "GPU-hours" if kinds == ["cuda"] else f"device-hours ({', '.join(kinds)})"
    _finish(plt, fig, ax, path, f"training time x devices, {unit} (log scale)", metric, title)
    return True


def _finish(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    # Beside the axes, where it covers no point; the figure widens by the legend's room.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    fig.set_size_inches(fig.get_figwidth() + 3.4, fig.get_figheight())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _readable_log_ticks(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend outside the axes included
    plt.close(fig)


def _readable_log_ticks(ax) -> None:
    """Label log axes at 1, 2, 5 x 10^k in plain numbers; matplotlib's default labels every minor
    tick when the data span about a decade, and they overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # lazy: see _pyplot

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        low, high = sorted(axis.get_view_interval())
        decades = np.log10(high / low) if low > 0 else 0.0
        # 1, 2, 5 x 10^k up to two decades; beyond, 10^k only (else the labels run into each other)
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
