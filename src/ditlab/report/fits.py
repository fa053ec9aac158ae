"""Scaling-law fits with honest uncertainty: ``y = a · x^b`` or ``y = e + a · x^b`` (an irreducible term e).

Both are fitted by least squares on ``log y`` (relative errors, as scaling studies compare FIDs),
the irreducible form with scipy's bounded ``least_squares`` (0 <= e < min y). The irreducible term is
used only when there are enough points for it (``MIN_POINTS_IRREDUCIBLE``) and it lowers the
small-sample Akaike criterion (AICc); with fewer than ``MIN_POINTS`` points no fit is made at all:
two points determine a two-parameter line exactly and its R² of 1 says nothing. Intervals are
percentile bootstrap intervals (resampling the points with replacement, refitting the same form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ditlab.report.labels import power_term

MIN_POINTS = 3  # fewer: refused (no degrees of freedom left for a 2-parameter fit)
FEW_POINTS = 5  # fewer: the fit is flagged as resting on few points
MIN_POINTS_IRREDUCIBLE = 5  # the 3-parameter form needs at least 2 degrees of freedom
BOOTSTRAP = 400  # resamples; the 2.5 / 97.5 percentiles of 400 are stable to a few %


@dataclass
class PowerLawFit:
    a: float
    b: float
    e: float  # irreducible term (0 for the pure power law)
    form: str  # "power_law" | "irreducible"
    n: int
    r2_log: float | None  # R² of log y
    rmse_log: float  # root mean square error of log y (0.1 ~ 10 % typical error)
    flags: list[str] = field(default_factory=list)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95 % bootstrap intervals of a, b, e
    boot: np.ndarray | None = None  # bootstrap parameter draws (a, b, e) rows, for prediction intervals
    residuals: np.ndarray | None = None  # log y - log fit at the fitted points, inflated for the fitted parameters

    def predict(self, x: Any) -> np.ndarray:
        return self.e + self.a * np.asarray(x, dtype=float) ** self.b

    def interval(self, x: Any, level: float = 0.95, new_run: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Bootstrap interval at x: of the fitted curve, or with ``new_run`` of one new run's value (each
        bootstrap curve times a resampled fit residual: the curve's uncertainty plus run-to-run scatter)."""
        if self.boot is None or not len(self.boot):
            return None
        x = np.asarray(x, dtype=float)
        curves = self.boot[:, 2:3] + self.boot[:, 0:1] * x.reshape(1, -1) ** self.boot[:, 1:2]
        if new_run and self.residuals is not None and len(self.residuals):
            draws = np.random.default_rng(0).choice(self.residuals, size=(len(curves), 1))
            curves = curves * np.exp(draws)
        lo, hi = np.percentile(curves, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return lo.reshape(x.shape), hi.reshape(x.shape)

    def formula(self, y: str = "y", x: str = "C") -> str:
        core = power_term(self.a, self.b, x)
        return f"{y} = {self.e:.4g} + {core}" if self.form == "irreducible" else f"{y} = {core}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "e": self.e,
            "form": self.form,
            "n": self.n,
            "r2_log": self.r2_log,
            "rmse_log": self.rmse_log,
            "flags": list(self.flags),
            "ci": {k: list(v) for k, v in self.ci.items()},
        }


def fit_scaling(x: Any, y: Any, form: str = "auto", bootstrap: int = BOOTSTRAP, seed: int = 0) -> PowerLawFit | str:
    """The fit, or a one-line reason why there is none. ``form``: auto | power_law | irreducible."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    distinct = len(np.unique(x))
    if distinct < MIN_POINTS:
        return (
            f"no fit: {distinct} distinct point(s); a power law needs at least {MIN_POINTS} "
            f"(with 2 points any line fits exactly)"
        )
    if form == "irreducible" and distinct < MIN_POINTS_IRREDUCIBLE:
        return f"no irreducible-term fit: {distinct} points, it needs at least {MIN_POINTS_IRREDUCIBLE}"
    candidates = [_fit_once(x, y, "power_law")]
    if form == "irreducible" or (form == "auto" and distinct >= MIN_POINTS_IRREDUCIBLE):
        irreducible = _fit_once(x, y, "irreducible")
        if irreducible is not None:
            candidates.append(irreducible)
    candidates = [c for c in candidates if c is not None]
    if form == "irreducible":
        candidates = candidates[-1:]
    best = min(candidates, key=lambda c: _aicc(c[1], len(x), 2 if c[0][3] == "power_law" else 3))
    (a, b, e, chosen), rss = best
    pred = np.log(e + a * x**b)
    ss_tot = float(((np.log(y) - np.log(y).mean()) ** 2).sum())
    fit = PowerLawFit(
        a=a,
        b=b,
        e=e,
        form=chosen,
        n=len(x),
        r2_log=1 - rss / ss_tot if ss_tot > 0 else None,
        rmse_log=float(np.sqrt(((np.log(y) - pred) ** 2).mean())),
    )
    dof = len(x) - (2 if chosen == "power_law" else 3)
    fit.residuals = (np.log(y) - pred) * math.sqrt(len(x) / max(dof, 1))
    if len(x) < FEW_POINTS:
        fit.flags.append(f"few points: n = {len(x)}, {dof} degree(s) of freedom; treat the fit as a rough guide")
    if bootstrap:
        _bootstrap(fit, x, y, bootstrap, seed)
    return fit


def _fit_once(
    x: np.ndarray, y: np.ndarray, form: str, start: tuple[float, float, float] | None = None
) -> tuple[tuple[float, float, float, str], float] | None:
    """((a, b, e, form), residual sum of squares of log y), or None if the optimiser fails. ``start``:
    (a, b, e) to start the irreducible fit from (the bootstrap starts from the full fit)."""
    lx, ly = np.log(x), np.log(y)
    x0 = float(np.exp(lx.mean()))  # fit in x / x0: a well-conditioned amplitude
    b, log_a0 = np.polyfit(lx - math.log(x0), ly, 1)
    if form == "power_law":
        a = math.exp(log_a0) * x0**-b
        return (a, float(b), 0.0, form), float(((ly - log_a0 - b * (lx - math.log(x0))) ** 2).sum())
    from scipy.optimize import least_squares

    ymin = float(y.min())
    if start is not None:
        a_s, b_s, e_s = start
        starts = [[math.log(a_s * x0**b_s), b_s, min(e_s, 0.99 * ymin)]]
    else:  # a few starting floors: the objective is not convex in e
        starts = [
            [math.log(max(float(np.exp(log_a0)) - f * ymin, 1e-12 * ymin)), float(b), f * ymin] for f in (0.1, 0.5, 0.9)
        ]

    def resid(p: np.ndarray) -> np.ndarray:
        return np.log(p[2] + np.exp(p[0]) * (x / x0) ** p[1]) - ly

    best = None
    for p0 in starts:
        try:
            res = least_squares(resid, p0, bounds=([-np.inf, -10, 0], [np.inf, 10, ymin * (1 - 1e-9)]))
        except ValueError:
            continue
        if res.success and np.all(np.isfinite(res.x)) and (best is None or res.cost < best.cost):
            best = res
    if best is None:
        return None
    log_a, b_fit, e = best.x
    return (math.exp(log_a) * x0**-b_fit, float(b_fit), float(e), form), float(2 * best.cost)


def _aicc(rss: float, n: int, k: int) -> float:
    rss = max(rss, 1e-300)
    penalty = 2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf
    return n * math.log(rss / n) + 2 * k + penalty


def _bootstrap(fit: PowerLawFit, x: np.ndarray, y: np.ndarray, draws: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    need = 3 if fit.form == "power_law" else 4  # distinct points for at least one degree of freedom
    rows = []
    for _ in range(draws):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < need:
            continue  # a resample without enough distinct points pins nothing down
        one = _fit_once(x[idx], y[idx], fit.form, start=(fit.a, fit.b, fit.e))
        if one is not None:
            rows.append(one[0][:3])
    if len(rows) < max(draws // 4, 20):  # mostly degenerate resamples: too few points to say anything
        fit.flags.append(f"bootstrap: only {len(rows)} of {draws} resamples could be fitted; no intervals")
        return
    fit.boot = np.array(rows, dtype=float)
    for i, name in enumerate(("a", "b", "e")):
        lo, hi = np.percentile(fit.boot[:, i], [2.5, 97.5])
        fit.ci[name] = (float(lo), float(hi))
