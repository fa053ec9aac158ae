"""report.md: the table of runs, the scaling fits with intervals, held-out errors and the frontier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ditlab.report.collect import Run
from ditlab.report.fits import PowerLawFit
from ditlab.report.labels import interval_text
from ditlab.report.predict import FITS, Study


def markdown(
    root: Path,
    runs: list[Run],
    rows: list[dict[str, Any]],
    metrics: list[str],
    result: dict[str, Any],
    study: Study | None,
) -> str:
    metric = result["metric"]
    st = result["status"]
    lines = [
        f"# ditlab report: `{root}`",
        "",
        f"{len(runs)} runs: {st['finished']} finished, {st['failed']} failed, {st['unfinished']} unfinished.",
        "",
    ]
    if result.get("at_step") is not None:
        left = ", ".join(f"`{n}`" for n in result.get("left_out") or []) or "none"
        lines += [
            f"**As of step {result['at_step']}**: every run's evaluation at that step stands in for its final "
            f"values (unfinished runs included). Left out (not evaluated there, failed, or Gflops unknown): {left}.",
            "",
        ]
    if metric:
        lines.append(f"Metric: **{metric}** ({'lower' if study and study.lower_is_better else 'higher'} is better).")
        rho = result.get("spearman_gflops")
        lines.append(
            f"Spearman rank correlation between Gflops and {metric}: "
            + (
                f"**{rho['rho']:.3f}** (p = {rho['p_value']:.3g}, n = {rho['n']})."
                if rho
                else "n/a (fewer than 3 distinct points)."
            )
        )
        lines.append("")
        if study is not None:
            lines += fits_section(study) + predictions_section(study) + frontier_section(study)
        for key in ("gflops", "compute", "frontier", "hours"):
            if key in result.get("plots", {}):
                lines += [f"![{key} vs {metric}]({result['plots'][key]})", ""]
    else:
        lines += ["No run has metrics in its summary (train with eval=digits or eval=inception).", ""]
    lines += runs_section(rows, metrics)
    return "\n".join(lines) + "\n"


def runs_section(rows: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    """The table of every run, then the failed and unfinished ones with their errors."""
    lines: list[str] = []
    cols = [
        "run",
        "status",
        "model",
        "block",
        "params",
        "gflops",
        "steps",
        "images_seen",
        "train_compute_gflops",
        *metrics,
    ]
    lines += ["## Runs", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in cols) + " |")
    problems = [r for r in rows if r["status"] != "finished"]
    if problems:
        lines += ["", "## Failed and unfinished runs", ""]
        for r in problems:
            lines.append(f"- `{r['run']}`: **{r['status']}**" + (f" — {r['error']}" if r.get("error") else ""))
    return lines


def fits_section(study: Study) -> list[str]:
    held = f"; {len(study.held_out)} most expensive held out" if study.held_out else ""
    lines = [
        f"## Scaling fits ({len(study.fit_runs)} runs fitted{held})",
        "",
        "Least squares on log values; `e` is the irreducible term, kept only when at least 5 points support it "
        "(lower AICc). Intervals: 95 %, t-based from the linearised fit on n − p degrees of freedom (calibrated: docs/scaling.md).",
        "",
        "| fit against | law | exponent b (95 %) | e (95 %) | R² (log) | n | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, fit in study.fits.items():
        if isinstance(fit, PowerLawFit):
            ci_b = interval_text(fit.ci.get("b"), digits=3)
            ci_e = f"{fit.e:.4g} {interval_text(fit.ci.get('e'), digits=3)}" if fit.form == "irreducible" else "—"
            lines.append(
                f"| {FITS[kind]} | {fit.formula(study.metric, 'x')} | {fit.b:.3f} {ci_b} | {ci_e} | "
                f"{fmt(fit.r2_log)} | {fit.n} | {'; '.join(fit.flags)} |"
            )
        else:
            lines.append(f"| {FITS[kind]} | — | — | — | — | — | **{fit}** |")
    return lines + [""]


def predictions_section(study: Study) -> list[str]:
    if not study.predictions:
        return []
    kinds = [k for k in FITS if isinstance(study.fits.get(k), PowerLawFit)]
    lines = [
        f"## Held-out runs: predicted from the {len(study.fit_runs)} cheaper runs",
        "",
        "| run | C (Gflops) | actual | " + " | ".join(f"{k} fit: predicted (95 %), error" for k in kinds) + " |",
        "|---|---|---|" + "---|" * len(kinds),
    ]
    for row in study.predictions:
        cells = []
        for k in kinds:
            p = row["fit"][k]
            inside = "" if p["inside"] is None else (" ✓" if p["inside"] else " ✗")
            cells.append(
                f"{p['predicted']:.4g} {interval_text((p['lo'], p['hi']) if p['lo'] is not None else None, digits=3)}, "
                f"{100 * p['rel_error']:+.0f} %{inside} (x{p['extrapolation']:.2g})"
            )
        lines.append(
            f"| {row['model']} | {row['train_compute_gflops']:.4g} | {row['actual']:.4g} | " + " | ".join(cells) + " |"
        )
    return lines + [
        "",
        "(95 %): prediction interval for one run (the fit's uncertainty plus its run-to-run scatter); ✓ / ✗: the actual value is inside / outside it; (xN): how far beyond the "
        "largest fitted x the prediction reaches.",
        "",
    ]


def frontier_section(study: Study) -> list[str]:
    if not study.owners:
        return ["## Compute-optimal frontier", "", "No eval history (set eval.every_n_steps) to build it from.", ""]
    lines = [
        "## Compute-optimal frontier",
        "",
        f"Best {study.metric} reached at or below each training compute, over every evaluation of every run:",
        "",
        "| compute from | to | model on the frontier | steps | best there |",
        "|---|---|---|---|---|",
    ]
    for o in study.owners:
        lines.append(
            f"| {o['compute_from']:.4g} | {o['compute_to']:.4g} | {o['model']} | {o['step_from']}–{o['step_to']} "
            f"| {o['best']:.4g} |"
        )
    return lines + [""]


def fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:.3g}"
    return str(v).replace("|", "/")
