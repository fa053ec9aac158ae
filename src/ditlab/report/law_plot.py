"""The joint law drawn: iso-loss contours over model Gflops G × images seen D, the sweep's evaluations,
and the compute-optimal line G_opt(C), D_opt(C) (plus the budget's recommendation when asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ditlab.report.collect import training_compute
from ditlab.report.law import JointLaw


def law_plot(law: JointLaw, G: np.ndarray, D: np.ndarray, study: dict[str, Any], path: Path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = study.get("budget") or {}
    g_lo, g_hi = G.min() / 3, G.max() * 3
    d_lo, d_hi = D.min() / 3, D.max() * 3
    if budget.get("G_opt"):
        g_lo, g_hi = min(g_lo, budget["G_opt"] / 2), max(g_hi, budget["G_opt"] * 2)
        d_lo, d_hi = min(d_lo, budget["D_opt"] / 2), max(d_hi, budget["D_opt"] * 2)
    gg, dd = np.meshgrid(np.geomspace(g_lo, g_hi, 120), np.geomspace(d_lo, d_hi, 120))
    surface = law.predict(gg, dd)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    levels = np.geomspace(surface.min() * 1.01, surface.max(), 12)
    contours = ax.contour(gg, dd, surface, levels=levels, cmap="viridis", linewidths=0.8)
    ax.clabel(contours, fontsize=6, fmt="%.3g")
    ax.scatter(G, D, s=14, c="k", zorder=3, label=f"evaluations ({len(G)})")
    if law.A > 0 and law.B > 0:
        compute = np.geomspace(training_compute(g_lo, d_lo), training_compute(g_hi, d_hi), 80)
        opt = np.array([law.optimum(c)[:2] for c in compute])
        inside = (opt[:, 0] >= g_lo) & (opt[:, 0] <= g_hi) & (opt[:, 1] >= d_lo) & (opt[:, 1] <= d_hi)
        ax.plot(opt[inside, 0], opt[inside, 1], "r-", lw=1.6, label=f"compute-optimal: G ∝ C^{law.a:.2f}")
    if budget.get("G_opt"):
        ax.scatter([budget["G_opt"]], [budget["D_opt"]], marker="*", s=160, c="r", zorder=4,
                   label=f"optimum at C = {budget['budget_gflops']:.3g}")  # fmt: skip
        preset = budget.get("preset")
        if preset:
            ax.scatter([preset["gflops"]], [preset["images"]], marker="D", s=50, facecolors="none",
                       edgecolors="r", zorder=4, label=f"nearest preset {preset['model']}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(g_lo, g_hi)
    ax.set_ylim(d_lo, d_hi)
    ax.set_xlabel("forward Gflops per image G")
    ax.set_ylabel("images seen D")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    ax.grid(True, which="both", alpha=0.25)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True
