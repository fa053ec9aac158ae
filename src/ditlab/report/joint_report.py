"""The joint law's part of ``ditlab-report``: checked before anything is written, then its plot, its
``scaling.json`` entry (``joint_law``), its report.md section and its console lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ditlab.errors import DitlabError
from ditlab.report.budget import joint_study, law_metric_for, law_points
from ditlab.report.collect import Run
from ditlab.report.joint_holdout import holdout_console, holdout_markdown, joint_holdout
from ditlab.report.labels import interval_text


def prepare_joint(
    runs: list[Run], sweep_metric: str | None, budget: float | None, law_metric: str | None, from_step: int = 0
) -> dict[str, Any] | None:
    """The joint study, or None when there is nothing to fit. Asked for (``budget=`` or ``law_metric=``),
    bad input raises; fitted by default (the runs logged val_loss), a refusal is recorded instead."""
    asked = budget is not None or law_metric is not None
    metric = law_metric_for(runs, law_metric)
    if metric is None:
        if budget is not None:
            raise DitlabError(
                "budget needs the joint law, and no run logged val_loss in eval/metrics.jsonl: "
                "train with val_loss in eval.metrics (eval.metrics=[fd_digits,val_loss]), or name another eval metric with law_metric=NAME"
            )
        return None
    try:
        return joint_study(runs, metric, budget, sweep_metric, from_step)
    except DitlabError as e:
        if asked:
            raise
        return {"metric": metric, "refused": str(e)}


def add_holdout(joint: dict[str, Any] | None, runs: list[Run], study: Any) -> None:
    """With ``holdout=N`` and a fitted law: the law refitted without the study's held-out runs predicts them."""
    if joint and "refused" not in joint and study is not None and study.held_out:
        joint["holdout"] = joint_holdout(runs, study.held_out, joint["metric"], study.metric, joint["from_step"])


def plot_name(joint: dict[str, Any] | None) -> str | None:
    return f"law_{joint['metric']}.png" if joint and "refused" not in joint else None


def write_joint(joint: dict[str, Any], runs: list[Run], out: Path, title: str) -> dict[str, Any]:
    """Draws the plot; returns the JSON-ready entry (the fitted object dropped)."""
    law = joint.pop("_law", None)
    if law is not None:
        from ditlab.report.law_plot import law_plot

        G, D, _, _ = law_points(runs, joint["metric"], joint.get("from_step", 0))  # the points the law was fitted to
        if law_plot(law, G, D, joint, out / plot_name(joint), title):
            joint["plot"] = plot_name(joint)
    return joint


def joint_markdown(joint: dict[str, Any] | None) -> str:
    if not joint:
        return ""
    metric = joint["metric"]
    lines = [f"## Joint scaling law of {metric} over every evaluation", ""]
    if "refused" in joint:
        return "\n".join(lines + [f"**{joint['refused']}**", ""]) + "\n"
    f, alloc = joint["fit"], joint["allocation"]
    lines += [
        f"`{metric} = E + A·G^−α + B·D^−β` (G: forward Gflops per image, D: images seen), fitted over "
        f"{f['n']} evaluations"
        + (f" (from step {joint['from_step']})" if joint.get("from_step") else "")
        + f" of {len(joint['runs'])} runs by variable projection and a Huber fit on log "
        f"{metric} (Hoffmann et al. 2022 approach 3; arXiv 2603.22339).",
        "",
        "| parameter | value | 95 % interval |",
        "|---|---|---|",
        f"| E (irreducible) | {f['E']:.4g} | {interval_text(f['ci']['E'])} |",
        f"| α (size exponent) | {f['alpha']:.3f} | {interval_text(f['ci']['alpha'])} |",
        f"| β (data exponent) | {f['beta']:.3f} | {interval_text(f['ci']['beta'])} |",
        f"| a = β/(α+β): G_opt ∝ C^a, D_opt ∝ C^(1−a) | {alloc['a']:.3f} | {interval_text(alloc['a_ci'])} |",
        "",
        f"A = {f['A_G']:.4g}, B = {f['B_D']:.4g}; RMSE of log {metric} {f['rmse_log']:.3g}, scatter of a new "
        f"run {f['scatter_log']:.3g}, {f['dof']} degrees of freedom. Compute: {alloc['compute_convention']}. "
        f"Intervals: {f['interval_method']}; {joint['calibration']}."
        + "".join(f" **{flag}.**" for flag in f["flags"])
        + "".join(f" Left out (no {metric}): `{name}`." for name in joint.get("runs_without_metric", [])),
        "",
    ]
    budget = joint.get("budget")
    if budget:
        lines += [
            f"### Budget C = {budget['budget_gflops']:.4g} training Gflops (×{budget['extrapolation']:.3g} the "
            "sweep's largest)",
            "",
            f"- Compute-optimal: G = {budget['G_opt']:.4g} Gflops/image {interval_text(budget['G_opt_ci'])}, "
            f"D = {budget['D_opt']:.4g} images, {metric} = {budget['L_opt']:.4g} {interval_text(budget['L_opt_ci'])}.",
        ]
        p = budget.get("preset")
        if p:
            extra = [k for k in p if k.endswith("_ci") and k != "loss_ci"]
            metric_txt = "".join(f"; {k[:-3]} {p[k[:-3]]:.4g} {interval_text(p[k])}" for k in extra)
            lines.append(
                f"- Nearest preset: **{p['model']}** ({p['gflops']:.4g} Gflops/image): {p['steps']} steps at batch "
                f"{p['batch']} ({p['images']:.4g} images); predicted {metric} {p['loss']:.4g} {interval_text(p['loss_ci'])} "
                f"(one new run){metric_txt}."
            )
        elif budget.get("preset_note"):
            lines.append(f"- {budget['preset_note']}.")
        lines.append("")
    lines += holdout_markdown(joint.get("holdout"), metric)
    if joint.get("plot"):
        lines += [f"![joint law of {metric}]({joint['plot']})", ""]
    return "\n".join(lines) + "\n"


def joint_console(joint: dict[str, Any] | None) -> list[str]:
    if not joint:
        return []
    if "refused" in joint:
        return [f"joint law of {joint['metric']}: {joint['refused']}"]
    f, alloc = joint["fit"], joint["allocation"]
    out = [
        f"joint law of {joint['metric']}: E = {f['E']:.4g}, alpha = {f['alpha']:.3f} {interval_text(f['ci']['alpha'])}, "
        f"beta = {f['beta']:.3f} {interval_text(f['ci']['beta'])}; a = {alloc['a']:.3f} {interval_text(alloc['a_ci'])} (95%), n = {f['n']}"
    ]
    p = (joint.get("budget") or {}).get("preset")
    if p:
        out.append(
            f"budget {joint['budget']['budget_gflops']:.4g} Gflops: G_opt {joint['budget']['G_opt']:.4g}; "
            f"train {p['model']} for {p['steps']} steps at batch {p['batch']}: "
            f"{joint['metric']} {p['loss']:.4g} {interval_text(p['loss_ci'])}"
        )
    elif joint.get("budget"):
        b = joint["budget"]
        out.append(f"budget {b['budget_gflops']:.4g} Gflops: G_opt {b['G_opt']:.4g}, D_opt {b['D_opt']:.4g} images")
    return out + holdout_console(joint.get("holdout"))
