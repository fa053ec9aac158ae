"""Fit the joint law on the cheaper half of a sweep, predict the other half's final values.

    .venv/bin/python experiments/cpu_scaling_law/predict.py runs/cpu_scaling_law/<time> \
        --out experiments/cpu_scaling_law

The runs are ordered by forward Gflops per image (every run of cpu_scaling_law trains the same steps,
so this is also training compute). The law ``L(G, D) = E + A·G^−α + B·D^−β``
(:func:`ditlab.report.law.fit_joint_law`) is fitted to every evaluation of ``val_loss`` of the
cheaper half; each held-out run's final ``val_loss`` is predicted at its (G, D) with the law's 95 %
interval for a new run. ``fd_digits`` is predicted through ``fd_digits = k · val_loss^m`` fitted on
the cheaper half's evaluations that logged both (:func:`ditlab.report.budget.metric_map`); its
interval spans the map's new-run intervals at both ends of the loss interval (as ``--budget`` does).
Writes ``prediction.json`` and ``prediction.md``; the goal (val_loss within 5 %, fd_digits within
15 %, each actual value inside its interval) is scored per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ditlab.report.budget import law_points, metric_map
from ditlab.report.collect import collect_runs
from ditlab.report.fits import PowerLawFit
from ditlab.report.law import JointLaw, fit_joint_law

GOALS = {"val_loss": 0.05, "fd_digits": 0.15}


def final_row(run) -> dict:
    rows = [r for r in run.history if r.get("final")] or run.history[-1:]
    return rows[-1] if rows else {}


def predict(sweep: Path, law_metric: str = "val_loss", sweep_metric: str = "fd_digits") -> dict:
    runs = [r for r in collect_runs(sweep) if r.status == "finished" and isinstance(r.summary.get("gflops"), float)]
    runs.sort(key=lambda r: r.summary["gflops"])
    half = len(runs) // 2
    cheap, held = runs[:half], runs[half:]
    G, D, L, names = law_points(cheap, law_metric)
    law = fit_joint_law(G, D, L, runs=names)
    if not isinstance(law, JointLaw):
        raise SystemExit(f"no joint law on the cheaper half: {law}")
    loss_map = metric_map(cheap, law_metric, sweep_metric)
    rows = []
    for run in held:
        last = final_row(run)
        g, d = run.summary["gflops"], float(last["images_seen"])
        loss = float(law.predict(g, d))
        loss_ci = law.loss_interval(g, d, new_run=True)
        row = {"run": run.summary.get("model"), "gflops": g, "images_seen": d, "steps": last["step"]}
        row[law_metric] = score(last.get(law_metric), loss, loss_ci, GOALS.get(law_metric, 0.05))
        if isinstance(loss_map, PowerLawFit) and loss_ci:
            ends = [loss_map.interval([v], new_run=True) for v in loss_ci]
            values = [float(e[i][0]) for e in ends if e for i in (0, 1)]
            ci = (min(values), max(values)) if values else None
            row[sweep_metric] = score(last.get(sweep_metric), float(loss_map.predict(loss)), ci, GOALS[sweep_metric])
        rows.append(row)
    return {
        "sweep": str(sweep),
        "fit_runs": [r.summary.get("model") for r in cheap],
        "held_out_runs": [r.summary.get("model") for r in held],
        "law": law.as_dict(),
        "metric_map": {"metric": sweep_metric, **loss_map.as_dict()}
        if isinstance(loss_map, PowerLawFit)
        else str(loss_map),
        "goals": {k: f"within {v:.0%}, actual inside the 95 % interval" for k, v in GOALS.items()},
        "predictions": rows,
    }


def score(actual, predicted: float, ci, goal: float) -> dict:
    out = {"predicted": predicted, "ci95": list(ci) if ci else None, "actual": actual}
    if isinstance(actual, (int, float)):
        err = predicted / actual - 1
        inside = bool(ci and ci[0] <= actual <= ci[1])
        out.update(error=err, inside=inside, goal_met=abs(err) <= goal and inside)
    return out


def markdown(result: dict) -> str:
    lines = [
        f"Fit on {len(result['fit_runs'])} runs ({', '.join(result['fit_runs'])}); held out: "
        f"{', '.join(result['held_out_runs'])}.",
        "",
        "| held-out run | Gflops | metric | actual | predicted [95 %] | error | inside | goal met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["predictions"]:
        for metric in GOALS:
            s = row.get(metric)
            if not s or s.get("actual") is None:
                continue
            ci = f"[{s['ci95'][0]:.4g}, {s['ci95'][1]:.4g}]" if s["ci95"] else "—"
            lines.append(
                f"| {row['run']} | {row['gflops']:.3g} | {metric} | {s['actual']:.4g} | {s['predicted']:.4g} {ci} | "
                f"{s['error']:+.1%} | {'yes' if s['inside'] else 'no'} | {'yes' if s['goal_met'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = predict(args.sweep)
    out = args.out or args.sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "prediction.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "prediction.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
