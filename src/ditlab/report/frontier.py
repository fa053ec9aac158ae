"""The compute-optimal frontier: the best value reached for each training compute, over every
evaluation of every run (``eval/metrics.jsonl``), and the runs (size × patch) that reach it.

An evaluation at step s of a run with forward Gflops G and global batch B spent C = G × 3 × s × B
(``images_seen`` in the history row). A point is on the frontier when no evaluation of any run at
the same or lower compute is as good. Reading off which run owns each stretch of compute answers
the question a scaling study is for: at this budget, which model should I train?
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ditlab.report.collect import Run, training_compute


@dataclass(frozen=True)
class CurvePoint:
    compute: float
    value: float
    step: int
    run: str  # run folder name
    model: str  # e.g. DiT-small/2 (size × patch)


def eval_points(runs: list[Run], metric: str) -> list[CurvePoint]:
    """Every evaluation of every finished or unfinished run, with its training compute."""
    out = []
    for run in runs:
        gflops = run.summary.get("gflops")
        if not _positive(gflops) or run.status == "failed":
            continue
        for row in run.history:
            value, seen = row.get(metric), row.get("images_seen")
            if _finite(value) and _positive(seen):
                out.append(
                    CurvePoint(
                        training_compute(gflops, seen),
                        float(value),
                        int(row.get("step", 0)),
                        run.name,
                        str(run.summary.get("model", run.name)),
                    )
                )
    return out


def frontier(points: list[CurvePoint], lower_is_better: bool = True) -> list[CurvePoint]:
    """Points that beat every point at the same or lower compute, in order of compute."""
    sign = 1.0 if lower_is_better else -1.0
    best, out = math.inf, []
    for p in sorted(points, key=lambda p: (p.compute, sign * p.value)):
        if sign * p.value < best:
            best = sign * p.value
            out.append(p)
    return out


def frontier_owners(front: list[CurvePoint]) -> list[dict[str, Any]]:
    """Consecutive frontier points of the same run merged: which model is best over which compute range."""
    spans: list[dict[str, Any]] = []
    for p in front:
        if spans and spans[-1]["run"] == p.run:
            spans[-1].update(compute_to=p.compute, best=p.value, points=spans[-1]["points"] + 1, step_to=p.step)
        else:
            spans.append(
                {
                    "run": p.run,
                    "model": p.model,
                    "compute_from": p.compute,
                    "compute_to": p.compute,
                    "step_from": p.step,
                    "step_to": p.step,
                    "best": p.value,
                    "points": 1,
                }
            )
    return spans


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _finite(v) and v > 0
