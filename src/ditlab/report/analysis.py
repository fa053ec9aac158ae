"""Numbers behind the report: the rows of the table, the power-law fit, the rank correlation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ditlab.report.collect import Run
from ditlab.report.fits import PowerLawFit, fit_scaling

# Preferred y-axis when --metric is not given: Inception FID first, then the digits feature space.
METRIC_PREFERENCE = ("fid", "fd_digits", "kid", "kd_digits", "is", "digits_accuracy")
COLUMNS = (
    "run",
    "status",
    "model",
    "block",
    "patch_size",
    "params",
    "gflops",
    "tokens",
    "steps",
    "images_seen",
    "train_compute_gflops",
    "final_loss",
    "wall_seconds",
    "device_hours",
)


def available_metrics(runs: list[Run]) -> list[str]:
    found: list[str] = []
    for run in runs:
        for key in run.summary.get("metrics") or {}:
            if key not in found:
                found.append(key)
    preferred = [m for m in METRIC_PREFERENCE if m in found]
    return preferred + sorted(m for m in found if m not in preferred)


def lower_is_better(runs: list[Run], metric: str) -> bool:
    for run in runs:
        flags = run.summary.get("metrics_lower_is_better") or {}
        if metric in flags:
            return bool(flags[metric])
    return not (metric.startswith("is") or metric.endswith("accuracy"))


def table_rows(runs: list[Run], metrics: list[str]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        s = run.summary
        row: dict[str, Any] = {"run": run.name, "status": run.status}
        for key in COLUMNS[2:]:
            row[key] = s.get(key)
        for m in metrics:
            row[m] = (s.get("metrics") or {}).get(m)
        row["error"] = s.get("error")
        rows.append(row)
    return rows


def points(runs: list[Run], x_key: str, metric: str) -> tuple[np.ndarray, np.ndarray, list[Run]]:
    """(x, y, runs) for finished runs that have both values (finite, x > 0)."""
    xs, ys, used = [], [], []
    for run in runs:
        x, y = run.summary.get(x_key), (run.summary.get("metrics") or {}).get(metric)
        if run.status == "finished" and _finite(x) and _finite(y) and x > 0:
            xs.append(float(x))
            ys.append(float(y))
            used.append(run)
    return np.array(xs), np.array(ys), used


def spearman(x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """Spearman rank correlation (scipy); None with fewer than 3 points or a constant axis."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import spearmanr  # lazy for start-up: scipy is slow to import

    res = spearmanr(x, y)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": int(len(x))}


def power_law_fit(x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """metric ≈ a · x^b, least squares in log-log space; None with fewer than 3 distinct points
    (two points fit any line exactly). Intervals and the irreducible term: :mod:`ditlab.report.fits`."""
    fit = fit_scaling(x, y, form="power_law", bootstrap=0)
    if not isinstance(fit, PowerLawFit):
        return None
    return {"a": fit.a, "b": fit.b, "r2": fit.r2_log, "n": fit.n}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
