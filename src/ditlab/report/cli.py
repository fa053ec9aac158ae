"""``ditlab-report sweep=DIR``: every run under DIR -> DIR/report/{report.csv, report.md, scaling.json, *.png}.

    ditlab-report sweep=runs/multirun/2025-01-01_12-00-00          # one sweep
    ditlab-report sweep=runs metric=digits_accuracy out=my_report
    ditlab-report sweep=runs/cpu_scaling_predict/<time> holdout=2   # fit the cheap runs, predict the 2 dearest

Options are ``key=value`` like every ditlab command (the old ``DIR --metric X`` spelling still works
for one release, with a note).

Besides the table: power-law fits of the final metric against training compute and against model
Gflops, and of the compute-optimal frontier of the eval histories, with bootstrap intervals (no fit
from fewer than 3 points); with ``holdout=N`` the error of their predictions for the N runs with
the most compute (and, with the joint law of val_loss, the law refitted on the other runs' evaluations
predicting theirs); the frontier's owner (size x patch) per compute range (docs/scaling.md). Where the
runs logged to wandb, the report goes to their group as one more run (``wandb=false``: it does not).

Finished runs give a row each with their metrics; failed runs (``status: failed`` in their
summary) and unfinished ones (started, no summary) are listed as such. Existing report files are
never replaced unless ``overwrite=true``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from ditlab.errors import DitlabError, one_line_errors
from ditlab.inputs import check_writable
from ditlab.key_value_args import parse_key_values
from ditlab.report.analysis import available_metrics, lower_is_better, points, spearman, table_rows
from ditlab.report.collect import as_of_step, collect_runs
from ditlab.report.joint_report import (
    add_holdout,
    joint_console,
    joint_markdown,
    plot_name,
    prepare_joint,
    write_joint,
)
from ditlab.report.labels import experiment_name, power_term
from ditlab.report.markdown import markdown
from ditlab.report.plots import fit_plot, frontier_plot, hours_plot
from ditlab.report.predict import FITS, scaling_study
from ditlab.report.wandb_report import log_report, sweep_wandb, wandb_console

OUTPUTS = ("report.csv", "report.md", "scaling.json")


def build_report(
    root: Path,
    out: Path,
    metric: str | None = None,
    overwrite: bool = False,
    holdout: int = 0,
    bootstrap: int = 400,
    at_step: int | None = None,
    budget: float | None = None,
    law_metric: str | None = None,
    wandb: bool = True,
    law_from_step: int = 0,
) -> dict[str, Any]:
    runs, left_out = _runs_to_report(root, out, at_step)
    metrics = available_metrics(runs)
    metric = _chosen_metric(metric, metrics, bootstrap)
    plots = _plot_names(metric)
    joint = prepare_joint(
        runs, metric, budget, law_metric, law_from_step
    )  # the joint law and --budget: refused before writing
    targets = [out / name for name in (*OUTPUTS, *plots.values(), plot_name(joint)) if name]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise DitlabError(
            f"{existing[0]} already exists; pass --overwrite to replace the report or --out to write elsewhere"
        )
    if holdout and not metric:
        raise DitlabError("--holdout needs a metric, and no run has one (train with eval=digits or eval=inception)")
    study = _study(runs, metric, holdout, bootstrap)  # before anything is written: a bad --holdout loses nothing
    add_holdout(joint, runs, study)  # the joint law refitted without the held-out runs
    out.mkdir(parents=True, exist_ok=True)

    rows = table_rows(runs, metrics)
    _write_csv(out / "report.csv", rows)
    result: dict[str, Any] = {
        "runs": len(runs),
        "metric": metric,
        "out": str(out),
        "at_step": at_step,
        "left_out": left_out,
        "status": {s: sum(r.status == s for r in runs) for s in ("finished", "failed", "unfinished")},
    }
    if study is not None:
        result.update(_study_results(root, runs, study, metric, out, plots))
    if joint is not None:
        law_title = f"{experiment_name(root, runs)}: joint law of {joint['metric']}"
        result["joint_law"] = write_joint(joint, runs, out, law_title)
    (out / "scaling.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(root, runs, rows, metrics, result, study) + joint_markdown(joint))
    if wandb and (where := sweep_wandb(runs, root)):  # the sweep's dashboard gets the report as one more run
        result["wandb"] = log_report(where, result, out)
    return result


def _study(runs: list[Any], metric: str | None, holdout: int, bootstrap: int) -> Any:
    if not metric:
        return None
    return scaling_study(runs, metric, lower_is_better(runs, metric), holdout=holdout, bootstrap=bootstrap)


def _runs_to_report(root: Path, out: Path, at_step: int | None) -> tuple[list[Any], list[str]]:
    """The runs under ``root`` (outside ``out``), as of ``at_step`` if given, and the names that step left out."""
    if not root.is_dir():
        raise DitlabError(f"{root} is not a directory; pass a sweep folder (runs/multirun/<time>) or runs/")
    check_writable(out, "out")  # before reading the runs: a read-only or misplaced out is found first
    runs = [r for r in collect_runs(root) if not _inside(r.path, out)]
    if not runs:
        raise DitlabError(f"no runs under {root} (looked for summary.json, config.yaml, checkpoints/)")
    if at_step is None:
        return runs, []
    runs, left = as_of_step(runs, at_step)
    if not runs:
        raise DitlabError(
            f"--at-step {at_step}: no run has an evaluation at step {at_step} (eval/metrics.jsonl); "
            "pick a step at which the runs were evaluated"
        )
    return runs, [r.name for r in left]


def _chosen_metric(metric: str | None, metrics: list[str], bootstrap: int) -> str | None:
    """``--metric`` checked against the runs' summaries (default: the first they have)."""
    if metric is not None and metric not in metrics:
        raise DitlabError(f"--metric {metric} is in no run's summary; available: {', '.join(metrics) or 'none'}")
    if bootstrap < 0:
        raise DitlabError(f"--bootstrap {bootstrap}: give a number of resamples (0: no intervals)")
    return metric or (metrics[0] if metrics else None)


def _plot_names(metric: str | None) -> dict[str, str]:
    if not metric:
        return {}
    return {
        "gflops": f"gflops_vs_{metric}.png",
        "compute": f"compute_vs_{metric}.png",
        "frontier": f"frontier_{metric}.png",
        "hours": f"hours_vs_{metric}.png",
    }


def _study_results(
    root: Path, runs: list[Any], study: Any, metric: str, out: Path, plots: dict[str, str]
) -> dict[str, Any]:
    """The scaling study's entries of ``scaling.json``; draws its plots into ``out``."""
    x, y, _ = points(runs, "gflops", metric)
    title = f"{experiment_name(root, runs)}: {metric} ({'lower' if study.lower_is_better else 'higher'} is better)"
    drawn = {}
    for key, draw in (
        ("gflops", lambda p: fit_plot(runs, study, "gflops", p, title)),
        ("compute", lambda p: fit_plot(runs, study, "compute", p, title)),
        ("frontier", lambda p: frontier_plot(runs, study, p, title)),
        ("hours", lambda p: hours_plot(runs, metric, p, title)),
    ):  # quality per GPU-hour
        if draw(out / plots[key]):
            drawn[key] = plots[key]
    return {"spearman_gflops": spearman(x, y), "study": study.as_dict(), "plots": drawn}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ditlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="a sweep folder (runs/multirun/<time>) or any folder of runs")
    parser.add_argument("--metric", help="y-axis metric (default: fid, else fd_digits, else the first found)")
    parser.add_argument(
        "--holdout",
        type=int,
        default=0,
        metavar="N",
        help="fit on all but the N runs with the most training compute and report the error of "
        "the fits' predictions for those N (the joint law's too, when the report fits one)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=400,
        metavar="B",
        help="0: no 95%% intervals; any other value: t-based intervals (docs/scaling.md; the number of the "
        "former bootstrap's resamples is no longer used)",
    )
    parser.add_argument(
        "--at-step",
        type=int,
        metavar="N",
        help="compare every run as it was at step N (its evaluation there, from eval/metrics.jsonl), "
        "unfinished runs included; runs not evaluated at N are left out",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="C",
        help="training compute in Gflops (3 x Gflops x images, the report's compute axis): the compute-optimal "
        "Gflops, nearest size x patch, steps and predicted loss from the joint law (docs/scaling.md)",
    )
    parser.add_argument("--law-metric", help="eval metric of the joint law (default: val_loss when logged)")
    parser.add_argument(
        "--law-from-step",
        type=int,
        default=0,
        metavar="N",
        help="fit the joint law to the evaluations at step N or later (leave out the EMA's warm-up, e.g. "
        "N = 3 / (1 - EMA decay); docs/scaling.md)",
    )
    parser.add_argument(
        "--wandb",
        default="true",
        choices=("true", "false"),
        help="true (default): where the runs logged to wandb, log the report as one more run of their group",
    )
    parser.add_argument("--out", help="output folder (default: DIR/report)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parse_key_values(parser, argv, {"sweep": "dir"})  # sweep=DIR metric=X (or the old DIR --metric X)
    root = Path(args.dir)
    with one_line_errors():
        result = build_report(
            root,
            Path(args.out) if args.out else root / "report",
            args.metric,
            args.overwrite,
            args.holdout,
            args.bootstrap,
            args.at_step,
            args.budget,
            args.law_metric,
            args.wandb == "true",
            args.law_from_step,
        )
    st = result["status"]
    print(
        f"{result['runs']} runs ({st['finished']} finished, {st['failed']} failed, {st['unfinished']} unfinished)"
        + (
            f" as of step {result['at_step']}; left out (not evaluated there): {', '.join(result['left_out']) or 'none'}"
            if result["at_step"] is not None
            else ""
        )
    )
    if result["metric"]:
        _print_study(result)
    for line in joint_console(result.get("joint_law")) + wandb_console(result.get("wandb")):
        print(line)
    print(f"report: {Path(result['out']) / 'report.md'}")


def _print_study(result: dict[str, Any]) -> None:
    """The fits, held-out predictions and frontier owners, one line each."""
    metric, study = result["metric"], result["study"]
    rho = result.get("spearman_gflops")
    print(
        f"metric: {metric}; Spearman(Gflops, {metric}) = "
        + (f"{rho['rho']:.3f} (p = {rho['p_value']:.3g}, n = {rho['n']})" if rho else "n/a")
    )
    for kind, fit in study["fits"].items():
        if "refused" in fit:
            print(f"fit vs {FITS[kind]}: {fit['refused']}")
            continue
        law = (f"{fit['e']:.4g} + " if fit["form"] == "irreducible" else "") + power_term(fit["a"], fit["b"])
        ci = fit["ci"].get("b")
        print(
            f"fit vs {FITS[kind]}: {metric} = {law}"
            + (f", b in [{ci[0]:.3f}, {ci[1]:.3f}] (95%)" if ci else "")
            + f", n = {fit['n']}"
            + "".join(f" [{f}]" for f in fit["flags"])
        )
    for row in study["predictions"]:
        errs = ", ".join(f"{k} fit {p['predicted']:.4g} ({100 * p['rel_error']:+.0f}%)" for k, p in row["fit"].items())
        print(f"held out {row['model']}: actual {row['actual']:.4g}; {errs}")
    if study["frontier_owners"]:
        print(
            "frontier: "
            + " -> ".join(
                f"{o['model']} (C {o['compute_from']:.3g}-{o['compute_to']:.3g})" for o in study["frontier_owners"]
            )
        )
