"""Convergence speed-up of recipe variants against the paper's DiT, from the runs' eval histories.

    python -m ditlab.report.convergence runs/modern_recipe/<time>     # -> <dir>/report/convergence.{md,csv,png}

Each finished run is labelled by the modern-recipe options it changes from the DiT defaults
(:func:`recipe_options`) and grouped by conditioning design. Within a design, the run with no
changed option is the baseline; its *target* is its own final metric value. For every run,
*steps to target* is the first step at which its eval history reaches the target (linearly
interpolated between the two evaluations around the crossing), and

    speed-up = baseline's steps to target / the run's steps to target.

A run that never reaches the target within the shared budget has no speed-up (shown as "not reached").
The same ratio against the baseline's *best* value (``speedup_best``) is reported too: on a short,
noisy budget the baseline's final value can be worse than its early ones, and then the first ratio
says little.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from ditlab.errors import DitlabError, one_line_errors
from ditlab.report.collect import Run, collect_runs

# (config path, DiT default, label when changed)
OPTIONS = (
    ("block.norm", "layernorm", "rmsnorm"),
    ("block.mlp", "gelu", "swiglu"),
    ("block.qk_norm", False, "qk_norm"),
    ("block.position", "sincos", "rope2d"),
    ("objective.time_sampling", "uniform", "logit_normal"),
    ("objective.time_shift", 1.0, "time_shift"),
    ("aux.name", "none", "repa"),
)


def recipe_options(cfg: Any) -> list[str]:
    """The recipe options a run's config changes from the paper's DiT, in a fixed order."""
    from omegaconf import OmegaConf

    changed = []
    for key, default, label in OPTIONS:
        value = OmegaConf.select(cfg, key, default=default)
        if value != default:
            changed.append(label if label != "repa" else str(value))
    return changed


def steps_to_reach(history: list[tuple[int, float]], target: float) -> float | None:
    """First step where the (step, value) curve falls to ``target`` (lower is better), interpolated."""
    prev = None
    for step, value in history:
        if value <= target:
            if prev is None or prev[1] == value:
                return float(step)
            (s0, v0) = prev
            return s0 + (step - s0) * (v0 - target) / (v0 - value)
        prev = (step, value)
    return None


def convergence_rows(runs: list[Run], metric: str) -> list[dict[str, Any]]:
    from omegaconf import OmegaConf

    entries = []
    for run in runs:
        if run.status != "finished":
            continue
        history = sorted((int(h["step"]), float(h[metric])) for h in run.history if h.get(metric) is not None)
        if not history:
            continue
        options = recipe_options(OmegaConf.load(run.path / "config.yaml"))
        entries.append(
            {
                "run": run,
                "history": history,
                "options": options,
                "variant": "+".join(options) if options else "DiT (baseline)",
            }
        )
    rows = []
    for block in sorted({e["run"].summary.get("block") for e in entries}):
        group = [e for e in entries if e["run"].summary.get("block") == block]
        base = next((e for e in group if not e["options"]), None)
        target = base["history"][-1][1] if base else None
        base_steps = steps_to_reach(base["history"], target) if base else None
        best = min(v for _, v in base["history"]) if base else None
        base_best_steps = steps_to_reach(base["history"], best) if base else None
        for e in sorted(group, key=lambda e: (len(e["options"]), e["options"])):
            s = e["run"].summary
            steps = steps_to_reach(e["history"], target) if target is not None else None
            steps_best = steps_to_reach(e["history"], best) if best is not None else None
            rows.append(
                {
                    "block": block,
                    "variant": e["variant"],
                    "params": s.get("params"),
                    "gflops": s.get("gflops"),
                    "steps": e["history"][-1][0],
                    f"final_{metric}": round(e["history"][-1][1], 2),
                    "best_" + metric: round(min(v for _, v in e["history"]), 2),
                    "digits_accuracy": (s.get("metrics") or {}).get("digits_accuracy"),
                    "steps_to_target": None if steps is None else round(steps, 1),
                    "speedup": None if steps is None or not base_steps else round(base_steps / steps, 2),
                    "steps_to_best": None if steps_best is None else round(steps_best, 1),
                    "speedup_best": None
                    if steps_best is None or not base_best_steps
                    else round(base_best_steps / steps_best, 2),
                    "history": e["history"],
                    "run": e["run"].name,
                }
            )
    return rows


def plot(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    from ditlab.report.plots import _pyplot

    plt = _pyplot()
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    variants = sorted({r["variant"] for r in rows if not r["variant"].startswith("DiT")})
    colors = {v: f"C{i % 10}" for i, v in enumerate(variants)}  # one colour per variant in every panel
    fig, axes = plt.subplots(1, len(blocks), figsize=(6.2 * len(blocks), 4.6), squeeze=False, sharey=True)
    for ax, block in zip(axes[0], blocks):
        for r in (r for r in rows if r["block"] == block):
            steps, values = zip(*r["history"])
            base = r["variant"].startswith("DiT")
            ax.plot(
                steps,
                values,
                color="black" if base else colors[r["variant"]],
                lw=2.4 if base else 1.3,
                ls="-" if base or r["variant"].count("+") < 2 else "--",
                label=r["variant"],
            )
        target = next(
            (r[f"final_{metric}"] for r in rows if r["block"] == block and r["variant"].startswith("DiT")), None
        )
        if target is not None:
            ax.axhline(target, color="gray", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(f"{block}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel(f"{metric} (lower is better; dotted: the baseline's final value)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], metric: str) -> str:
    head = [
        "design",
        "variant",
        "params",
        "Gflops",
        f"final {metric}",
        f"best {metric}",
        "accuracy",
        "steps to baseline's final",
        "speed-up",
        "steps to baseline's best",
        "speed-up (best)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = "" if r["digits_accuracy"] is None else f"{r['digits_accuracy']:.3f}"
        reach = "not reached" if r["steps_to_target"] is None else f"{r['steps_to_target']:g}"
        speed = "—" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        reach_best = "not reached" if r["steps_to_best"] is None else f"{r['steps_to_best']:g}"
        speed_best = "—" if r["speedup_best"] is None else f"{r['speedup_best']:.2f}×"
        lines.append(
            f"| {r['block']} | {r['variant']} | {r['params']:,} | {r['gflops']:.5f} | "
            f"{r[f'final_{metric}']:.1f} | {r[f'best_{metric}']:.1f} | {acc} | {reach} | {speed} | "
            f"{reach_best} | {speed_best} |"
        )
    return "\n".join(lines) + "\n"


def build(root: Path, out: Path, metric: str = "fd_digits", overwrite: bool = False) -> list[dict[str, Any]]:
    if not root.is_dir():
        raise DitlabError(f"{root} is not a directory; pass the sweep folder (runs/modern_recipe/<time>)")
    rows = convergence_rows([r for r in collect_runs(root) if out not in r.path.parents], metric)
    if not rows:
        raise DitlabError(f"no finished run under {root} has a {metric} eval history (set eval.every_n_steps)")
    targets = [out / f"convergence.{ext}" for ext in ("md", "csv", "png")]
    if any(p.exists() for p in targets) and not overwrite:
        raise DitlabError(f"{out}/convergence.* already exists; pass --overwrite or --out")
    out.mkdir(parents=True, exist_ok=True)
    targets[0].write_text(markdown(rows, metric))
    with targets[1].open("w", newline="") as f:
        fields = [k for k in rows[0] if k != "history"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, metric, targets[2])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ditlab.report.convergence", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a sweep folder, e.g. runs/modern_recipe/<time>")
    parser.add_argument("--metric", default="fd_digits", help="a lower-is-better eval metric (default fd_digits)")
    parser.add_argument("--out", type=Path, help="output folder (default ROOT/report)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    with one_line_errors():
        rows = build(args.root, args.out or args.root / "report", args.metric, args.overwrite)
    print(markdown(rows, args.metric), end="")


if __name__ == "__main__":
    main()
