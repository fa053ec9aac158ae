"""Scaling-law fits with honest uncertainty: ``y = a · x^b`` or ``y = e + a · x^b`` (an irreducible term e).

Both are fitted by least squares on ``log y`` (relative errors, as scaling studies compare FIDs),
the irreducible form with scipy's bounded ``least_squares`` (0 <= e < min y). The irreducible term is
used only when there are enough points for it (``MIN_POINTS_IRREDUCIBLE``) and it lowers the
small-sample Akaike criterion (AICc); with fewer than ``MIN_POINTS`` points no fit is made at all:
two points determine a two-parameter line exactly and its R² of 1 says nothing.

Intervals are t-based (``method="t"``, the default): the fit is linearised in its parameters
(log-amplitude, exponent, floor) and the covariance s²(JᵀJ)⁻¹ with s² = RSS/(n − p) gives Wald
intervals with Student-t quantiles on n − p degrees of freedom, for parameters and, by the delta
method, for the curve; a new run's prediction interval adds s² (its own scatter). For the pure power
law this is ordinary least squares on log y, exact under Gaussian log-noise (e.g. Seber & Wild 1989,
*Nonlinear Regression*, §5.1 for the nonlinear form). The percentile bootstrap the report used before
(``method="bootstrap"``) covered 88.5 % (exponent) and 84.5-86 % (held-out runs) at n = 6
(experiments/scaling_calibration).
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
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95 % intervals of a, b, e
    boot: np.ndarray | None = None  # bootstrap parameter draws (a, b, e) rows, for prediction intervals
    residuals: np.ndarray | None = None  # log y - log fit at the fitted points, inflated for the fitted parameters
    cov: np.ndarray | None = None  # covariance of (log a at x0, b[, e]) from the linearised fit (method "t")
    x0: float = 1.0  # the fit's centre (geometric mean of x): log a at x0 is uncorrelated with b
    dof: int = 0  # n - parameters
    method: str = "t"  # how intervals were made: "t" (linearised, t quantiles) | "bootstrap"

    def predict(self, x: Any) -> np.ndarray:
        return self.e + self.a * np.asarray(x, dtype=float) ** self.b

    def interval(self, x: Any, level: float = 0.95, new_run: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Interval at x: of the fitted curve, or with ``new_run`` of one new run's value (the curve's
        uncertainty plus the run-to-run scatter s)."""
        if self.cov is not None:
            return self._t_interval(np.asarray(x, dtype=float), level, new_run)
        if self.boot is None or not len(self.boot):
            return None
        x = np.asarray(x, dtype=float)
        curves = self.boot[:, 2:3] + self.boot[:, 0:1] * x.reshape(1, -1) ** self.boot[:, 1:2]
        if new_run and self.residuals is not None and len(self.residuals):
            draws = np.random.default_rng(0).choice(self.residuals, size=(len(curves), 1))
            curves = curves * np.exp(draws)
        lo, hi = np.percentile(curves, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return lo.reshape(x.shape), hi.reshape(x.shape)

    def _t_interval(self, x: np.ndarray, level: float, new_run: bool) -> tuple[np.ndarray, np.ndarray]:
        from scipy.stats import t as student_t

        grad = _log_model_jacobian(x.reshape(-1), self.a * self.x0**self.b, self.b, self.e, self.x0, self.form)
        var = np.einsum("ij,jk,ik->i", grad, self.cov, grad)
        if new_run:
            var = var + self.rmse_log**2 * self.n / max(self.dof, 1)  # s² = RSS / (n - p)
        half = student_t.ppf(0.5 + level / 2, max(self.dof, 1)) * np.sqrt(np.maximum(var, 0))
        centre = np.log(self.predict(x.reshape(-1)))
        return np.exp(centre - half).reshape(x.shape), np.exp(centre + half).reshape(x.shape)

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
            "interval_method": "t (linearised fit, n - p degrees of freedom)" if self.method == "t" else self.method,
            "dof": self.dof,
        }


def fit_scaling(
    x: Any, y: Any, form: str = "auto", bootstrap: int = BOOTSTRAP, seed: int = 0, method: str = "t"
) -> PowerLawFit | str:
    """The fit, or a one-line reason why there is none. ``form``: auto | power_law | irreducible.
    ``method``: t (default) | bootstrap (percentile, ``bootstrap`` resamples); ``bootstrap=0``: no intervals."""
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
    fit.dof = dof
    fit.x0 = float(np.exp(np.log(x).mean()))
    if bootstrap and method == "bootstrap":
        fit.method = "bootstrap"
        _bootstrap(fit, x, y, bootstrap, seed)
    elif bootstrap and dof > 0:
        _t_intervals(fit, x)
    return fit


def _log_model_jacobian(x: np.ndarray, amp0: float, b: float, e: float, x0: float, form: str) -> np.ndarray:
    """d log(e + amp0 · (x/x0)^b) / d(log amp0, b[, e]), one row per x."""
    u = amp0 * (x / x0) ** b
    cols = [u / (e + u), u * np.log(x / x0) / (e + u)]
    if form == "irreducible":
        cols.append(1 / (e + u))
    return np.stack(cols, axis=1)


def _t_intervals(fit: PowerLawFit, x: np.ndarray) -> None:
    """Wald intervals from the linearised fit with t quantiles on n - p degrees of freedom."""
    from scipy.stats import t as student_t

    amp0 = fit.a * fit.x0**fit.b
    jac = _log_model_jacobian(x, amp0, fit.b, fit.e, fit.x0, fit.form)
    s2 = fit.rmse_log**2 * fit.n / fit.dof
    fit.cov = s2 * np.linalg.pinv(jac.T @ jac)
    q = student_t.ppf(0.975, fit.dof)
    se = np.sqrt(np.maximum(np.diag(fit.cov), 0))
    fit.ci["b"] = (fit.b - q * se[1], fit.b + q * se[1])
    # a = amp0 · x0^-b: log a = log amp0 - b log x0
    grad_log_a = np.array([1.0, -math.log(fit.x0)] + ([0.0] if fit.form == "irreducible" else []))
    se_log_a = math.sqrt(max(float(grad_log_a @ fit.cov @ grad_log_a), 0.0))
    fit.ci["a"] = (fit.a * math.exp(-q * se_log_a), fit.a * math.exp(q * se_log_a))
    if fit.form == "irreducible":
        fit.ci["e"] = (max(fit.e - q * se[2], 0.0), fit.e + q * se[2])


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
