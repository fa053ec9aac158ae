"""``ditlab-report DIR``: every run under DIR -> DIR/report/{report.csv, report.md, *.png}.

    ditlab-report runs/multirun/2025-01-01_12-00-00          # one sweep
    ditlab-report runs --metric digits_accuracy --out my_report

Finished runs give a row each with their metrics; failed runs (``status: failed`` in their
summary) and unfinished ones (started, no summary) are listed as such. Existing report files are
never replaced unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from ditlab.errors import DitlabError, one_line_errors
from ditlab.report.analysis import (
    available_metrics, lower_is_better, points, power_law_fit, spearman, table_rows,
)
from ditlab.report.collect import Run, collect_runs
from ditlab.report.plots import compute_plot, gflops_plot

OUTPUTS = ("report.csv", "report.md")


def build_report(root: Path, out: Path, metric: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    if not root.is_dir():
        raise DitlabError(f"{root} is not a directory; pass a sweep folder (runs/multirun/<time>) or runs/")
    runs = [r for r in collect_runs(root) if not _inside(r.path, out)]
    if not runs:
        raise DitlabError(f"no runs under {root} (looked for summary.json, config.yaml, checkpoints/)")
    metrics = available_metrics(runs)
    if metric is not None and metric not in metrics:
        raise DitlabError(f"--metric {metric} is in no run's summary; available: {', '.join(metrics) or 'none'}")
    metric = metric or (metrics[0] if metrics else None)
    plots = {"gflops": f"gflops_vs_{metric}.png", "compute": f"compute_vs_{metric}.png"} if metric else {}
    targets = [out / name for name in (*OUTPUTS, *plots.values())]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise DitlabError(f"{existing[0]} already exists; pass --overwrite to replace the report or --out to write elsewhere")
    out.mkdir(parents=True, exist_ok=True)

    rows = table_rows(runs, metrics)
    _write_csv(out / "report.csv", rows)
    result: dict[str, Any] = {"runs": len(runs), "metric": metric, "out": str(out),
                              "status": {s: sum(r.status == s for r in runs) for s in ("finished", "failed", "unfinished")}}
    if metric:
        x, y, _ = points(runs, "gflops", metric)
        result["spearman_gflops"] = spearman(x, y)
        cx, cy, _ = points(runs, "train_compute_gflops", metric)
        result["power_law"] = power_law_fit(cx, cy)
        title = f"{root.name}: {metric} ({'lower' if lower_is_better(runs, metric) else 'higher'} is better)"
        result["plots"] = {}
        if gflops_plot(runs, metric, out / plots["gflops"], title):
            result["plots"]["gflops"] = plots["gflops"]
        if compute_plot(runs, metric, out / plots["compute"], title) is not None:
            result["plots"]["compute"] = plots["compute"]
    (out / "report.md").write_text(_markdown(root, runs, rows, metrics, result))
    return result


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _markdown(root: Path, runs: list[Run], rows: list[dict[str, Any]], metrics: list[str], result: dict[str, Any]) -> str:
    metric = result["metric"]
    st = result["status"]
    lines = [f"# ditlab report: `{root}`", "",
             f"{len(runs)} runs: {st['finished']} finished, {st['failed']} failed, {st['unfinished']} unfinished.", ""]
    if metric:
        lines.append(f"Metric: **{metric}** ({'lower' if lower_is_better(runs, metric) else 'higher'} is better).")
        rho = result.get("spearman_gflops")
        lines.append(
            f"Spearman rank correlation between Gflops and {metric}: "
            + (f"**{rho['rho']:.3f}** (p = {rho['p_value']:.3g}, n = {rho['n']})." if rho else "n/a (fewer than 3 distinct points).")
        )
        fit = result.get("power_law")
        if fit:
            lines.append(f"Power law over training compute C (Gflops x 3 x images seen): {metric} = "
                         f"{fit['a']:.4g} · C^{fit['b']:.4f} (R² in log space {fit['r2']:.3f}, n = {fit['n']})."
                         if fit.get("r2") is not None else f"Power law: {metric} = {fit['a']:.4g} · C^{fit['b']:.4f}.")
        lines.append("")
        for key in ("gflops", "compute"):
            if key in result.get("plots", {}):
                lines += [f"![{key} vs {metric}]({result['plots'][key]})", ""]
    else:
        lines += ["No run has metrics in its summary (train with eval=digits or eval=inception).", ""]
    cols = ["run", "status", "model", "block", "params", "gflops", "steps", "images_seen", "train_compute_gflops", *metrics]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    problems = [r for r in rows if r["status"] != "finished"]
    if problems:
        lines += ["", "## Failed and unfinished runs", ""]
        for r in problems:
            lines.append(f"- `{r['run']}`: **{r['status']}**" + (f" — {r['error']}" if r.get("error") else ""))
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:.3g}"
    return str(v).replace("|", "/")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ditlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="a sweep folder (runs/multirun/<time>) or any folder of runs")
    parser.add_argument("--metric", help="y-axis metric (default: fid, else fd_digits, else the first found)")
    parser.add_argument("--out", help="output folder (default: DIR/report)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    with one_line_errors():
        result = build_report(root, Path(args.out) if args.out else root / "report", args.metric, args.overwrite)
    st = result["status"]
    print(f"{result['runs']} runs ({st['finished']} finished, {st['failed']} failed, {st['unfinished']} unfinished)")
    if result["metric"]:
        rho = result.get("spearman_gflops")
        print(f"metric: {result['metric']}; Spearman(Gflops, {result['metric']}) = "
              + (f"{rho['rho']:.3f} (p = {rho['p_value']:.3g}, n = {rho['n']})" if rho else "n/a"))
        fit = result.get("power_law")
        if fit:
            print(f"power law: {result['metric']} = {fit['a']:.4g} * C^{fit['b']:.4f} (C = Gflops x 3 x images seen)")
    print(f"report: {Path(result['out']) / 'report.md'}")
