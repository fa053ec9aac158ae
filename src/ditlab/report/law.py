"""One scaling law over every evaluation of a sweep: ``L(G, D) = E + A·G^−α + B·D^−β``.

G is the model's forward Gflops per image (DiT's size axis: it folds in the patch size), D the
images seen at the evaluation. This is Hoffmann et al. 2022 (*Training Compute-Optimal Large
Language Models*, arXiv 2203.15556) approach 3, fitted as "Problems with Chinchilla Approach 2"
(arXiv 2603.22339) recommends:

* **variable projection**: for fixed (α, β) the law is linear in (E, A, B), so a grid over (α, β)
  solves non-negative least squares (``scipy.optimize.nnls``) for (E, A, B) on relative errors
  (≈ errors of log L); the best grid points start
* a local **Huber fit on log L** of all five parameters (``scipy.optimize.least_squares``,
  ``loss="huber"``), with the Huber scale set to 1.345 robust standard deviations of the residuals
  (Huber 1981, *Robust Statistics*: 95 % efficiency under Gaussian noise, outliers bounded).

Intervals: the M-estimator sandwich covariance of the linearised fit (Huber 1981, §7.6), Wald
intervals with t quantiles on n − 5 degrees of freedom, the delta method for derived quantities
(the allocation exponent a = β/(α+β), the optimum at a budget); a new run's prediction interval
adds its own scatter. Calibration on synthetic sweeps: experiments/scaling_calibration.

Compute follows the report (``collect.training_compute``): C = 3·G·D (forward + backward = 3
forward passes per image). Along C = 3GD the law is smallest at
``G_opt = (αA / βB)^(1/(α+β)) · (C/3)^(β/(α+β))`` (set dL/dG = 0), so G_opt ∝ C^a, D_opt ∝ C^(1−a).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ditlab.report.collect import training_compute

PARAMS = ("E", "A", "B", "alpha", "beta")
MIN_DISTINCT = 3  # distinct G values, and distinct D values, for an exponent to be pinned down
EXPONENT_BOUNDS = (0.02, 3.0)
GRID = np.geomspace(0.03, 2.5, 28)


@dataclass
class JointLaw:
    E: float
    A: float  # in units of the normalised size g = G / g0 (see ``predict``)
    B: float  # in units of d = D / d0
    alpha: float
    beta: float
    g0: float  # geometric mean of G over the points: normalising keeps the fit well conditioned
    d0: float
    n: int
    scale: float  # robust residual standard deviation of log L (a new run's own scatter)
    huber: float  # Huber threshold on log L used in the fit
    cov: np.ndarray | None  # covariance of (E, A, B, alpha, beta)
    rmse_log: float
    flags: list[str] = field(default_factory=list)
    # With run offsets: cov = Σ_k ms_k · M_k over two mean squares (within runs, between runs) and
    # their degrees of freedom, so each quantity gets its own Satterthwaite degrees of freedom.
    components: list[tuple[float, np.ndarray, float, int]] = field(default_factory=list)  # (ms, M, new-run share, dof)

    @property
    def dof(self) -> int:
        """The residual degrees of freedom: n − 5, and with run offsets at most the between-run
        component's (runs − 3): the runs, not the evaluations, pin down the size axis."""
        if not self.components:
            return self.n - len(PARAMS)
        return max(min(self.n - len(PARAMS), self.components[-1][3]), 1)

    @property
    def params(self) -> np.ndarray:
        return np.array([self.E, self.A, self.B, self.alpha, self.beta])

    def predict(self, G: Any, D: Any, p: np.ndarray | None = None) -> np.ndarray:
        E, A, B, al, be = self.params if p is None else p
        g, d = np.asarray(G, dtype=float) / self.g0, np.asarray(D, dtype=float) / self.d0
        return E + A * g**-al + B * d**-be

    @property
    def a(self) -> float:
        """The allocation exponent: G_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    def optimum(self, C: float, p: np.ndarray | None = None) -> tuple[float, float, float]:
        """(G_opt, D_opt, L_opt) at training compute C = 3 G D."""
        E, A, B, al, be = self.params if p is None else p
        if A <= 0 or B <= 0:
            return math.nan, math.nan, math.nan
        gd = C / training_compute(1.0, 1.0) / (self.g0 * self.d0)  # g · d along the budget
        g = (al * A / (be * B)) ** (1 / (al + be)) * gd ** (be / (al + be))
        d = gd / g
        return g * self.g0, d * self.d0, float(E + A * g**-al + B * d**-be)

    def _half_width(self, grad: np.ndarray, level: float, new_run: bool = False) -> float:
        """t quantile × standard error of grad · params (plus a new run's scatter).

        Without run offsets: t on n − 5 degrees of freedom. With them the variance is a sum of the
        within-run and between-run mean squares, weighted per quantity: Satterthwaite (1946,
        *Biometrics Bulletin* 2:110) gives each its degrees of freedom, so a quantity the evaluations
        within a run pin down (β) gets nearly n − runs, one the runs pin down (α) nearly runs − 3;
        rounded down to an integer (as for Welch's test): with 3 to 4 degrees of freedom the fraction
        matters (t quantile 3.18 at 3, 2.98 at 3.4), and unrounded intervals for L_opt covered 91–93 %.
        """
        from scipy.stats import t as student_t

        if not self.components:
            var, dof = float(grad @ self.cov @ grad) + (self.scale**2 if new_run else 0.0), float(self.dof)
        else:
            parts = [ms * (float(grad @ M @ grad) + (share if new_run else 0.0)) for ms, M, share, _ in self.components]
            var = sum(parts)
            denom = sum(w**2 / nu for w, (_, _, _, nu) in zip(parts, self.components))
            dof = math.floor(var**2 / denom) if denom > 0 else float(self.dof)  # rounded down, as usual
        return float(student_t.ppf(0.5 + level / 2, max(dof, 1.0))) * math.sqrt(max(var, 0.0))

    def param_interval(self, name: str, level: float = 0.95) -> tuple[float, float] | None:
        if self.cov is None:
            return None
        i = PARAMS.index(name)
        half = self._half_width(np.eye(len(PARAMS))[i], level)
        lo = self.params[i] - half
        return (max(lo, 0.0), self.params[i] + half)

    def a_interval(self, level: float = 0.95) -> tuple[float, float] | None:
        if self.cov is None:
            return None
        s = self.alpha + self.beta
        grad = np.array([0, 0, 0, -self.beta / s**2, self.alpha / s**2])
        half = self._half_width(grad, level)
        return (self.a - half, self.a + half)

    def log_interval(self, f: Callable[[np.ndarray], float], level: float = 0.95, new_run: bool = False):
        """Delta-method interval of a positive quantity f(params), symmetric in log f."""
        if self.cov is None:
            return None
        centre = f(self.params)
        if not (centre > 0 and math.isfinite(centre)):
            return None
        grad = _gradient(lambda p: math.log(f(p)), self.params)
        half = self._half_width(grad, level, new_run)
        return (centre * math.exp(-half), centre * math.exp(half))

    def loss_interval(self, G: float, D: float, level: float = 0.95, new_run: bool = False):
        return self.log_interval(lambda p: float(self.predict(G, D, p)), level, new_run)

    def as_dict(self) -> dict[str, Any]:
        return {
            "law": "L(G, D) = E + A_G * G^-alpha + B_D * D^-beta (G: forward Gflops/image, D: images seen)",
            "E": self.E,
            "A_G": self.A * self.g0**self.alpha,
            "B_D": self.B * self.d0**self.beta,
            "alpha": self.alpha,
            "beta": self.beta,
            "ci": {k: interval_list(self.param_interval(k)) for k in ("E", "alpha", "beta")},
            "a": self.a,
            "a_ci": interval_list(self.a_interval()),
            "n": self.n,
            "dof": self.dof,
            "rmse_log": self.rmse_log,
            "scatter_log": self.scale,
            "huber_delta_log": self.huber,
            "flags": list(self.flags),
            "interval_method": "Huber sandwich covariance with run offsets, Wald/delta method, t quantiles on "
            "n - 5 degrees of freedom (where runs are offset: Satterthwaite's, rounded down, between runs - 3 and "
            "n - runs - 2)",
        }


def interval_list(v: tuple[float, float] | None) -> list[float] | None:
    """An interval as JSON's [lo, hi] of plain floats; None when there is none."""
    return [float(v[0]), float(v[1])] if v else None


def fit_joint_law(G: Any, D: Any, L: Any, runs: Any = None) -> JointLaw | str:
    """The law fitted to points (G, D, L), or a one-line reason why there is none. ``runs``: which run
    each point comes from (default: G), so the intervals allow for scatter shared by a run's evaluations."""
    G, D, L = (np.asarray(v, dtype=float).reshape(-1) for v in (G, D, L))
    runs = np.asarray(G if runs is None else runs).reshape(-1)
    keep = np.isfinite(G) & np.isfinite(D) & np.isfinite(L) & (G > 0) & (D > 0) & (L > 0)
    G, D, L, runs = G[keep], D[keep], L[keep], runs[keep]
    if len(L) <= len(PARAMS):
        return f"no joint-law fit: {len(L)} (G, D) points; the law has {len(PARAMS)} parameters, it needs at least 6"
    for axis, v in (("model sizes G (Gflops)", G), ("training lengths D (images seen)", D)):
        if len(np.unique(v)) < MIN_DISTINCT:
            return f"no joint-law fit: {len(np.unique(v))} distinct {axis}; it needs at least {MIN_DISTINCT}"
    g0, d0 = float(np.exp(np.log(G).mean())), float(np.exp(np.log(D).mean()))
    g, d, logL = G / g0, D / d0, np.log(L)
    starts = _grid_starts(g, d, L)
    if not starts:
        return "no joint-law fit: no (alpha, beta) on the grid gives a positive law"
    p, res = _polish(starts, g, d, logL, f_scale=None)  # least squares: a first scale for Huber
    mad = 1.4826 * float(np.median(np.abs(res - np.median(res))))
    huber = max(1.345 * mad, 1e-9)
    p, res = _polish([p, *starts[:2]], g, d, logL, f_scale=huber)
    law = JointLaw(*p, g0=g0, d0=d0, n=len(L), scale=0.0, huber=huber, cov=None,
                   rmse_log=float(np.sqrt(np.mean(res**2))))  # fmt: skip
    law.cov, law.scale, law.components = _sandwich(p, g, d, res, huber, runs)
    for name, (lo, hi) in (("alpha", EXPONENT_BOUNDS), ("beta", EXPONENT_BOUNDS)):
        if not lo * 1.01 < getattr(law, name) < hi * 0.99:
            law.flags.append(f"{name} = {getattr(law, name):.3g} at the edge of its search range")
    if law.A <= 0 or law.B <= 0:
        law.flags.append("a term of the law vanished (A or B = 0): no compute-optimal allocation")
    return law


def _design(g: np.ndarray, d: np.ndarray, al: float, be: float) -> np.ndarray:
    return np.stack([np.ones_like(g), g**-al, d**-be], axis=1)


def _grid_starts(g: np.ndarray, d: np.ndarray, L: np.ndarray, keep: int = 3) -> list[np.ndarray]:
    """Variable projection on a grid: (E, A, B) by NNLS on relative errors for each (alpha, beta);
    the ``keep`` best by squared log error."""
    from scipy.optimize import nnls

    scored = []
    for al in GRID:
        for be in GRID:
            M = _design(g, d, al, be) / L[:, None]
            coef, _ = nnls(M, np.ones_like(L))
            pred = _design(g, d, al, be) @ coef
            if np.all(pred > 0):
                scored.append((float(((np.log(pred) - np.log(L)) ** 2).sum()), np.array([*coef, al, be])))
    scored.sort(key=lambda s: s[0])
    return [p for _, p in scored[:keep]]


def _polish(starts: list[np.ndarray], g, d, logL, f_scale: float | None) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import least_squares

    lo = [0, 0, 0, EXPONENT_BOUNDS[0], EXPONENT_BOUNDS[0]]
    hi = [np.inf, np.inf, np.inf, EXPONENT_BOUNDS[1], EXPONENT_BOUNDS[1]]

    def resid(p: np.ndarray) -> np.ndarray:
        pred = p[0] + p[1] * g ** -p[3] + p[2] * d ** -p[4]
        return np.log(np.maximum(pred, 1e-300)) - logL

    best = None
    for p0 in starts:
        p0 = np.clip(p0, np.array(lo) + 1e-12, np.array(hi) - 1e-9)
        r = least_squares(resid, p0, bounds=(lo, hi), loss="huber" if f_scale else "linear",
                          f_scale=f_scale or 1.0, x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12)  # fmt: skip
        if best is None or r.cost < best.cost:
            best = r
    return best.x, resid(best.x)


def _sandwich(p: np.ndarray, g, d, res: np.ndarray, huber: float, runs: np.ndarray) -> tuple[np.ndarray, float, list]:
    """(covariance of the parameters, a new run's scatter, the covariance's mean-square components
    for :meth:`JointLaw._half_width`; empty without run offsets).

    Huber's M-estimator sandwich (JᵀJ)⁻¹ Jᵀ Σ J (JᵀJ)⁻¹ on the clipped residuals ψ, with Σ the
    variance-components model of a sweep: every evaluation scatters (σ_e²) and every run is offset as
    a whole (σ_r², shared by its evaluations: seed, data order). σ_e² comes from the scatter around
    each run's mean residual, σ_r² from the run means (ANOVA / method of moments; the run means lose
    3 degrees of freedom to E, A and alpha, which absorb run-level offsets). With a run offset each
    quantity's t quantile has Satterthwaite degrees of freedom between runs − 3 (the runs pin down the
    size axis) and n − runs − 2 (the evaluations within a run pin down the data axis, B and β).
    """
    E, A, B, al, be = p
    pred = E + A * g**-al + B * d**-be
    jac = (
        np.stack([np.ones_like(g), g**-al, d**-be, -A * g**-al * np.log(g), -B * d**-be * np.log(d)], axis=1)
        / pred[:, None]
    )  # d log L / d params
    n, k = len(res), len(p)
    inside = max(float(np.mean(np.abs(res) <= huber)), 1.0 / n)
    psi = np.clip(res, -huber, huber) / inside  # Huber's correction for the clipped share
    labels, idx, counts = np.unique(runs, return_inverse=True, return_counts=True)
    R = len(labels)
    means = np.bincount(idx, weights=psi) / counts
    s2_total = float((psi**2).sum()) / max(n - k, 1)
    within_dof = n - R - 2  # B and beta vary within a run; E, A and alpha only between runs
    if within_dof <= 0 or R <= 3:  # one evaluation per run, or too few runs: no components
        return s2_total * np.linalg.pinv(jac.T @ jac), math.sqrt(s2_total), []
    s2_e = float(((psi - means[idx]) ** 2).sum()) / within_dof
    between = float((counts * means**2).sum()) / (R - 3)  # E[between] = m σ_r² + σ_e² (per run)
    m = float(counts.mean())
    # Unbiased without truncating σ_r² = (between − s2_e)/m at zero (truncating selects small s2_e):
    # covariance = s2_e · M_within + between · M_between, both positive semi-definite.
    bread = np.linalg.pinv(jac.T @ jac)
    per_run = np.zeros((R, k))
    np.add.at(per_run, idx, jac)  # Σ_runs (Jᵀ 1)(1ᵀ J) = Jᵀ Z Zᵀ J
    run_mean_part = per_run / np.sqrt(counts)[:, None]  # Jᵀ J minus this part: the within-run scatter
    m_within = bread @ (jac.T @ jac - run_mean_part.T @ run_mean_part) @ bread
    m_between = bread @ (per_run.T @ per_run / m) @ bread
    components = [(s2_e, m_within, 1 - 1 / m, within_dof), (between, m_between, 1 / m, R - 3)]
    cov = s2_e * m_within + between * m_between
    scale = math.sqrt(max(s2_e * (1 - 1 / m) + between / m, 0.0))
    return cov, scale, components


def _gradient(f: Callable[[np.ndarray], float], p: np.ndarray) -> np.ndarray:
    out = np.zeros(len(p))
    for i in range(len(p)):
        h = 1e-6 * max(abs(p[i]), 1e-8)
        up, down = p.copy(), p.copy()
        up[i] += h
        down[i] -= h
        out[i] = (f(up) - f(down)) / (2 * h)
    return out
