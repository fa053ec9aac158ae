"""``ditlab-report holdout=N`` for the joint law: fit it on the cheaper runs, predict the held-out ones.

The held-out runs are the report's (the N with the most training compute, :func:`scaling_study`). The
law ``L(G, D) = E + A·G^−α + B·D^−β`` is fitted to every evaluation of the law metric of the other
runs; each held-out run's final value is predicted at its (G, D) with the law's 95 % interval for one
new run. The sweep metric (e.g. ``fd_digits``) is predicted through ``metric = k · loss^m`` fitted on
the fit runs' final evaluations that logged both (:func:`ditlab.report.budget.metric_map`); its interval
spans the map's new-run intervals at both ends of the loss interval, as ``budget=`` does.
"""

from __future__ import annotations

from typing import Any

from ditlab.report.budget import law_points, metric_map
from ditlab.report.collect import Run
from ditlab.report.fits import PowerLawFit
from ditlab.report.labels import interval_text
from ditlab.report.law import JointLaw, fit_joint_law, interval_list


def joint_holdout(
    runs: list[Run], held_out: list[Run], law_metric: str, sweep_metric: str | None, from_step: int = 0
) -> dict[str, Any]:
    """Fit runs, held-out runs, the law fitted without them and one prediction row per held-out run; or
    ``{"refused": reason}`` when the fit runs do not pin the law down."""
    held = {r.name for r in held_out}
    fit_runs = [r for r in runs if r.name not in held]
    G, D, L, names = law_points(fit_runs, law_metric, from_step)
    law = fit_joint_law(G, D, L, runs=names)
    out: dict[str, Any] = {"fit_runs": sorted(set(names)), "held_out": [r.name for r in held_out]}
    if not isinstance(law, JointLaw):
        return {**out, "refused": f"{law} ({law_metric} of the {len(set(names))} fit runs)"}
    mapped = sweep_metric if sweep_metric and sweep_metric != law_metric else None
    loss_map = metric_map(fit_runs, law_metric, mapped) if mapped else None
    out["fit"] = law.as_dict()
    if mapped:
        out["metric_map"] = (
            {"metric": mapped, **loss_map.as_dict()} if isinstance(loss_map, PowerLawFit) else {"refused": loss_map}
        )
    out["predictions"] = [_predict_run(run, law, law_metric, mapped, loss_map) for run in held_out]
    return out


def _predict_run(run: Run, law: JointLaw, law_metric: str, mapped: str | None, loss_map: Any) -> dict[str, Any]:
    last = _final_row(run)
    g, d = float(run.summary["gflops"]), last.get("images_seen", run.summary.get("images_seen"))
    row: dict[str, Any] = {"run": run.name, "model": run.summary.get("model"), "gflops": g, "step": last.get("step")}
    if not isinstance(d, (int, float)) or d <= 0:
        return {**row, "refused": "no images_seen at its last evaluation"}
    loss, loss_ci = float(law.predict(g, d)), law.loss_interval(g, float(d), new_run=True)
    row["images_seen"] = float(d)
    row[law_metric] = _score(last.get(law_metric), loss, loss_ci)
    if mapped and isinstance(loss_map, PowerLawFit):
        ends = [loss_map.interval([v], new_run=True) for v in (loss_ci or ())]
        values = [float(e[i][0]) for e in ends if e for i in (0, 1)]
        ci = (min(values), max(values)) if values else None
        actual = last.get(mapped, (run.summary.get("metrics") or {}).get(mapped))
        row[mapped] = _score(actual, float(loss_map.predict(loss)), ci)
    return row


def _final_row(run: Run) -> dict[str, Any]:
    """The run's final evaluation (the row marked final, else its last)."""
    rows = [r for r in run.history if r.get("final")] or run.history[-1:]
    return rows[-1] if rows else {}


def _score(actual: Any, predicted: float, ci: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"predicted": predicted, "ci95": interval_list(ci)}
    if isinstance(actual, (int, float)) and actual:
        out.update(
            actual=float(actual),
            rel_error=predicted / actual - 1,
            inside=None if not ci else bool(ci[0] <= actual <= ci[1]),
        )
    return out


def holdout_markdown(h: dict[str, Any] | None, law_metric: str) -> list[str]:
    if not h:
        return []
    lines = [f"### Held-out runs: the joint law fitted on the {len(h['fit_runs'])} cheaper runs", ""]
    if "refused" in h:
        return lines + [f"**{h['refused']}**", ""]
    f = h["fit"]
    lines += [
        f"Fitted on {f['n']} evaluations of {', '.join(f'`{n}`' for n in h['fit_runs'])}: E = {f['E']:.3g}, "
        f"α = {f['alpha']:.3g} {interval_text(f['ci']['alpha'])}, β = {f['beta']:.3g} {interval_text(f['ci']['beta'])}, scatter of "
        f"log {law_metric} {f['scatter_log']:.2g} ({f['dof']} degrees of freedom)."
        + "".join(f" **{flag}.**" for flag in f["flags"]),
    ]
    m = h.get("metric_map")
    if m and "refused" not in m:
        lines[-1] += (
            f" `{m['metric']} = {m['a']:.4g} · {law_metric}^{m['b']:.3g}` over the fit runs' final evaluations "
            f"that have both (n = {m['n']})."
        )
    elif m:
        lines[-1] += f" No {m.get('metric', 'metric')} prediction: {m['refused']}."
    lines += ["", "| held-out run | Gflops | step | metric | actual | predicted [95 %, one new run] | error | inside |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in h["predictions"]:
        for metric in [k for k in row if isinstance(row[k], dict)]:
            s = row[metric]
            if "actual" not in s:
                continue
            inside = "—" if s["inside"] is None else ("yes" if s["inside"] else "no")
            lines.append(
                f"| {row.get('model') or row['run']} | {row['gflops']:.3g} | {row['step']} | {metric} | {s['actual']:.4g} | "
                f"{s['predicted']:.4g} {interval_text(s['ci95'])} | {s['rel_error']:+.1%} | {inside} |"
            )
    return lines + [""]


def holdout_console(h: dict[str, Any] | None) -> list[str]:
    if not h or "refused" in h:
        return [f"joint law, held out: {h['refused']}"] if h else []
    out = []
    for row in h["predictions"]:
        parts = [
            f"{metric} {s['actual']:.4g} predicted {s['predicted']:.4g} ({s['rel_error']:+.1%}"
            + ("" if s["inside"] is None else (", inside" if s["inside"] else ", outside"))
            + ")"
            for metric, s in row.items()
            if isinstance(s, dict) and "actual" in s
        ]
        out.append(f"joint law, held out {row.get('model') or row['run']}: " + "; ".join(parts))
    return out
