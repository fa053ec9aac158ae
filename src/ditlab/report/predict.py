"""The predictive part of ``ditlab-report``: fits, held-out prediction errors and the frontier.

Three fits of one metric, each on the *fit runs* (every finished run, or with ``--holdout N`` all
but the N with the most training compute):

* ``compute``: each run's final value against its training compute C = Gflops × 3 × images seen;
* ``gflops``: each run's final value against the model's forward Gflops (a fixed-steps sweep);
* ``frontier``: the compute-optimal frontier of the fit runs' eval histories against C.

Each fit then predicts the held-out runs' final values (with the fit's t-based prediction interval) and the
report gives the relative error: the test a scaling law exists to pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ditlab.errors import DitlabError
from ditlab.report.analysis import points
from ditlab.report.collect import Run
from ditlab.report.fits import MIN_POINTS, PowerLawFit, fit_scaling
from ditlab.report.frontier import CurvePoint, eval_points, frontier, frontier_owners

FITS = {"compute": "training compute C", "gflops": "model Gflops", "frontier": "frontier of the eval histories vs C"}


@dataclass
class Study:
    metric: str
    lower_is_better: bool
    fit_runs: list[Run]
    held_out: list[Run]
    fits: dict[str, PowerLawFit | str] = field(default_factory=dict)  # a fit, or why there is none
    predictions: list[dict[str, Any]] = field(default_factory=list)
    front: list[CurvePoint] = field(default_factory=list)  # over all runs
    owners: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "lower_is_better": self.lower_is_better,
            "fit_runs": [r.name for r in self.fit_runs],
            "held_out": [r.name for r in self.held_out],
            "fits": {k: (v.as_dict() if isinstance(v, PowerLawFit) else {"refused": v}) for k, v in self.fits.items()},
            "predictions": self.predictions,
            "frontier_owners": self.owners,
        }


def scaling_study(
    runs: list[Run], metric: str, lower_is_better: bool, holdout: int = 0, bootstrap: int = 400, seed: int = 0
) -> Study:
    _, _, usable = points(runs, "train_compute_gflops", metric)
    usable = [r for r in usable if _num(r.summary.get("gflops"))]
    ordered = sorted(usable, key=lambda r: (r.summary["train_compute_gflops"], r.summary["gflops"]))
    if holdout < 0:
        raise DitlabError(f"--holdout {holdout}: give the number of most expensive runs to hold out (0 or more)")
    if holdout and len(ordered) - holdout < MIN_POINTS:
        raise DitlabError(
            f"--holdout {holdout} leaves {len(ordered) - holdout} of {len(ordered)} finished runs with "
            f"{metric} to fit; a fit needs at least {MIN_POINTS}: lower --holdout"
        )
    fit_runs, held = (ordered[:-holdout], ordered[-holdout:]) if holdout else (ordered, [])
    study = Study(metric, lower_is_better, fit_runs, held)

    def xs(rs: list[Run], key: str) -> np.ndarray:
        return np.array([float(r.summary[key]) for r in rs])

    y = np.array([float(r.summary["metrics"][metric]) for r in fit_runs])
    study.fits["compute"] = fit_scaling(xs(fit_runs, "train_compute_gflops"), y, bootstrap=bootstrap, seed=seed)
    study.fits["gflops"] = fit_scaling(xs(fit_runs, "gflops"), y, bootstrap=bootstrap, seed=seed)
    fit_front = frontier(eval_points(fit_runs, metric), lower_is_better)
    study.fits["frontier"] = (
        fit_scaling([p.compute for p in fit_front], [p.value for p in fit_front], bootstrap=bootstrap, seed=seed)
        if fit_front
        else "no fit: the fit runs have no eval history (eval.every_n_steps)"
    )
    x_of = {"compute": "train_compute_gflops", "gflops": "gflops", "frontier": "train_compute_gflops"}
    for run in held:
        actual = float(run.summary["metrics"][metric])
        row: dict[str, Any] = {
            "run": run.name,
            "model": run.summary.get("model"),
            "actual": actual,
            "train_compute_gflops": run.summary["train_compute_gflops"],
            "gflops": run.summary["gflops"],
            "fit": {},
        }
        for kind, fit in study.fits.items():
            if not isinstance(fit, PowerLawFit):
                continue
            x = float(run.summary[x_of[kind]])
            pred = float(fit.predict(x))
            band = fit.interval([x], new_run=True)
            lo, hi = (float(band[0][0]), float(band[1][0])) if band else (None, None)
            row["fit"][kind] = {
                "predicted": pred,
                "lo": lo,
                "hi": hi,
                "rel_error": (pred - actual) / actual,
                "inside": None if lo is None else bool(lo <= actual <= hi),
                "extrapolation": x / max(xs(fit_runs, x_of[kind])),
            }
        study.predictions.append(row)
    study.front = frontier(eval_points(runs, metric), lower_is_better)
    study.owners = frontier_owners(study.front)
    return study


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and v > 0
