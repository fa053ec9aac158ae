"""Do the report's 95 % intervals cover 95 %? Synthetic sweeps that follow a known law, fitted as the
report fits them; the share of sweeps whose interval contains the truth.

Cases (``CASES``): the final-value fits of :mod:`ditlab.report.fits` (pure power law and the
irreducible form, n runs with log-normal run-to-run scatter, two held-out runs at ×2.2 and ×4.4
the largest fitted x) and the joint law of :mod:`ditlab.report.law` (runs × evaluations with
log-normal scatter per evaluation, a held-out larger model). experiments/scaling_calibration/run.py
runs them all and writes the table; tests run a few small ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ditlab.report.collect import training_compute
from ditlab.report.fits import PowerLawFit, fit_scaling
from ditlab.report.law import JointLaw, fit_joint_law

HELD_OUT = (2.2, 4.4)  # held-out runs' x, in multiples of the largest fitted x (the issue's test)
POWER = {"a": 500.0, "b": -0.31}  # y = a C^b
IRREDUCIBLE = {"e": 3.0, "a": 40.0, "b": -0.35}  # y = e + a C^b
JOINT = {"E": 0.25, "A": 0.05, "B": 40.0, "alpha": 0.4, "beta": 0.55}  # L = E + A G^-alpha + B D^-beta
JOINT_G = (0.002, 0.004, 0.008, 0.016, 0.032, 0.064)  # fitted model sizes (Gflops); held out: 0.128
JOINT_D = tuple(int(s * 128) for s in (250, 500, 1000, 2000, 4000))  # images seen at each evaluation


def final_value_sweep(form: str, n: int, noise: float, rng: np.random.Generator, method: str, bootstrap: int):
    """One synthetic sweep of n runs; returns {quantity: covered (bool)} or None if no fit."""
    c = np.geomspace(1e3, 1e6, n)
    x_new = c.max() * np.array(HELD_OUT)
    if form == "power_law":
        truth = lambda x: POWER["a"] * x ** POWER["b"]  # noqa: E731
        b_true = POWER["b"]
    else:
        truth = lambda x: IRREDUCIBLE["e"] + IRREDUCIBLE["a"] * x ** IRREDUCIBLE["b"]  # noqa: E731
        b_true = IRREDUCIBLE["b"]
    y = truth(c) * np.exp(rng.normal(0, noise, n))
    y_new = truth(x_new) * np.exp(rng.normal(0, noise, len(x_new)))
    fit = fit_scaling(c, y, form=form, bootstrap=bootstrap, seed=int(rng.integers(1 << 30)), method=method)
    if not isinstance(fit, PowerLawFit) or "b" not in fit.ci:
        return None
    out = {"exponent b": fit.ci["b"][0] <= b_true <= fit.ci["b"][1]}
    if form == "irreducible":
        out["floor e"] = fit.ci["e"][0] <= IRREDUCIBLE["e"] <= fit.ci["e"][1]
    band = fit.interval(x_new, new_run=True)
    for k, (lo, hi, actual) in enumerate(zip(band[0], band[1], y_new)):
        out[f"new run x{HELD_OUT[k]}"] = bool(lo <= actual <= hi)
    return out


def joint_sweep(noise: float, rng: np.random.Generator, run_noise: float = 0.0):
    """Runs JOINT_G evaluated at JOINT_D; scatter per evaluation (and optionally per run)."""
    p = JOINT
    G, D = (v.ravel() for v in np.meshgrid(np.array(JOINT_G), np.array(JOINT_D, dtype=float)))
    truth = lambda g, d: p["E"] + p["A"] * g ** -p["alpha"] + p["B"] * d ** -p["beta"]  # noqa: E731
    per_run = dict(zip(JOINT_G, rng.normal(0, run_noise, len(JOINT_G))))
    L = truth(G, D) * np.exp(rng.normal(0, noise, len(G)) + np.array([per_run[g] for g in G]))
    law = fit_joint_law(G, D, L)
    if not isinstance(law, JointLaw) or law.cov is None:
        return None
    a_true = p["beta"] / (p["alpha"] + p["beta"])
    g_new, d_new = 2 * max(JOINT_G), float(max(JOINT_D))
    actual = truth(g_new, d_new) * math.exp(rng.normal(0, math.hypot(noise, run_noise)))
    c_budget = training_compute(g_new, d_new)
    lo_l, hi_l = law.log_interval(lambda q: law.optimum(c_budget, q)[2])
    true_opt = _true_optimum(c_budget)
    out = {}
    for name in ("alpha", "beta"):
        lo, hi = law.param_interval(name)
        out[name] = lo <= p[name] <= hi
    lo, hi = law.a_interval()
    out["a = beta/(alpha+beta)"] = lo <= a_true <= hi
    lo, hi = law.loss_interval(g_new, d_new, new_run=True)
    out["new run, G x2"] = lo <= actual <= hi
    out["L_opt(C)"] = lo_l <= true_opt <= hi_l
    return out


def _true_optimum(c: float) -> float:
    p = JOINT
    al, be = p["alpha"], p["beta"]
    g = (al * p["A"] / (be * p["B"])) ** (1 / (al + be)) * (c / 3) ** (be / (al + be))
    return p["E"] + p["A"] * g**-al + p["B"] * (c / 3 / g) ** -be


def coverage(case: dict[str, Any], sweeps: int, seed: int) -> dict[str, Any]:
    """Share of ``sweeps`` synthetic sweeps whose 95 % interval holds the truth, per quantity."""
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {}
    failed = 0
    for _ in range(sweeps):
        if case["kind"] == "joint":
            one = joint_sweep(case["noise"], rng, case.get("run_noise", 0.0))
        else:
            one = final_value_sweep(case["kind"], case["n"], case["noise"], rng, case["method"], case.get("boot", 400))
        if one is None:
            failed += 1
            continue
        for k, v in one.items():
            hits.setdefault(k, []).append(bool(v))
    return {
        "sweeps": sweeps,
        "no_fit": failed,
        "coverage": {k: float(np.mean(v)) for k, v in hits.items()},
        "binomial_se": math.sqrt(0.95 * 0.05 / max(sweeps - failed, 1)),
    }


CASES: list[dict[str, Any]] = [
    *(
        {"name": f"power law, n={n}, t", "kind": "power_law", "n": n, "noise": 0.015, "method": "t"}
        for n in (5, 6, 8, 10)
    ),
    {
        "name": "power law, n=6, percentile bootstrap (before)",
        "kind": "power_law",
        "n": 6,
        "noise": 0.015,
        "method": "bootstrap",
        "boot": 400,
        "sweeps": 200,
    },  # fmt: skip
    *(
        {"name": f"irreducible, n={n}, t", "kind": "irreducible", "n": n, "noise": 0.015, "method": "t"}
        for n in (5, 6, 8, 10)
    ),
    {"name": "joint law, 6 runs x 5 evals, 1 % scatter", "kind": "joint", "noise": 0.01, "sweeps": 1000},
    {
        "name": "joint law, + 1 % per-run offset (correlated evals)",
        "kind": "joint",
        "noise": 0.01,
        "run_noise": 0.01,
        "sweeps": 1000,
    },  # fmt: skip
]
