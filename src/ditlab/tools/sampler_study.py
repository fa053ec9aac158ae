"""Sampler speed vs quality on the bundled digits: train once, sample with each sampler, measure.

    python -m ditlab.tools.sampler_study experiments/samplers/study.yaml

The study file names the training runs (the default experiment and its ``objective=flow`` twin)
and the samplers. Each run is trained once (reused when its ``summary.json`` exists); each sample
set is drawn with ``ditlab-sample``'s code into ``<run>/samples/`` (reused when its archive
exists). Quality is the digit classifier's accuracy on the requested class and the Fréchet
distance in its feature space against all real digits. Results land next to the study file:
``results.csv``, ``results.md`` and ``quality_vs_nfe.png`` (never overwritten without
``--overwrite``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from ditlab.config import compose
from ditlab.data.digits import load_digits_tensors
from ditlab.errors import DitlabError, one_line_errors
from ditlab.images import to_uint8
from ditlab.metrics.digits_classifier import classify_samples, digits_frechet_distance
from ditlab.tools.sample import sample
from ditlab.training.train import train

log = logging.getLogger("ditlab")
COLUMNS = (
    "label",
    "objective",
    "sampler",
    "steps",
    "model_calls",
    "nfe",
    "cfg_scale",
    "cfg_channels",
    "cfg_interval",
    "num_samples",
    "seed",
    "digits_accuracy",
    "frechet_distance",
    "reference",
    "fd_vs_reference",
    "acc_vs_reference",
)


def ensure_run(objective: str, train_overrides: list[str], runs_dir: Path) -> Path:
    """The run directory of ``ditlab-train objective=<objective> <train_overrides>``, trained if needed."""
    cfg = compose("train", [f"objective={objective}", *train_overrides, "paths.output_dir=unused"])
    run_dir = runs_dir / cfg.run_name
    if (run_dir / "summary.json").exists():
        log.info("reusing %s", run_dir)
        return run_dir
    cfg = compose("train", [f"objective={objective}", *train_overrides, f"paths.output_dir={run_dir}"])
    log.info("training %s", run_dir)
    train(cfg)
    return run_dir


def sample_set(run_dir: Path, entry: dict[str, Any], study: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Draw (or reuse) one sample set; returns its folder and recipe."""
    overrides = [
        f"ckpt={run_dir}",
        f"num_samples={study['num_samples']}",
        f"batch_size={study['batch_size']}",
        f"seed={entry.get('seed', study['seed'])}",
        *study.get("sample_overrides", []),
        *entry["overrides"],
    ]
    slug = re.sub(r"[^A-Za-z0-9_.-]", "", entry["label"].replace("+", "p"))
    out = run_dir / "samples" / f"study_{slug}_n{study['num_samples']}_seed{entry.get('seed', study['seed'])}"
    if (out / "samples.json").exists():
        log.info("reusing %s", out)
        return out, json.loads((out / "samples.json").read_text())
    log.info("sampling %s", entry["label"])
    return out, sample(compose("sample", [*overrides, f"out={out}"]))


def measure(out: Path, real: np.ndarray, cache_dir: Path) -> dict[str, float]:
    with np.load(out / "samples.npz") as f:
        images, labels = f["arr_0"], f["arr_1"]
    return {
        "digits_accuracy": classify_samples(images, labels, cache_dir)["digits_accuracy"],
        "frechet_distance": digits_frechet_distance(images, real, cache_dir),
    }


def real_floor(real: np.ndarray, n: int, cache_dir: Path, seed: int) -> float:
    """Fréchet distance of ``n`` real digits against all real digits: what a perfect sampler scores."""
    pick = np.random.default_rng(seed).choice(len(real), size=min(n, len(real)), replace=False)
    return digits_frechet_distance(real[pick], real, cache_dir)


def run_study(study_path: Path, runs_dir: Path, overwrite: bool = False) -> list[dict[str, Any]]:
    study = OmegaConf.to_container(OmegaConf.load(study_path), resolve=True)
    out_dir = study_path.parent
    outputs = [out_dir / name for name in ("results.csv", "results.md", "quality_vs_nfe.png")]
    if not overwrite and any(p.exists() for p in outputs):
        raise DitlabError(f"{out_dir} already holds results; pass --overwrite to replace them")
    cache_dir = Path(compose("train", ["paths.output_dir=unused"]).paths.cache_dir)
    runs = {obj: ensure_run(obj, study.get("train_overrides", []), runs_dir) for obj in study["objectives"]}
    resolution = json.loads((runs[study["objectives"][0]] / "summary.json").read_text())["data"]["resolution"]
    real = to_uint8(load_digits_tensors(resolution)[0])

    rows = []
    for entry in study["samplers"]:
        out, recipe = sample_set(runs[entry["objective"]], entry, study)
        row = {"label": entry["label"], "objective": entry["objective"], **{k: recipe.get(k) for k in COLUMNS[2:11]}}
        row.update(measure(out, real, cache_dir))
        log.info("%s: %s", entry["label"], row)
        rows.append(row)
    by_label = {r["label"]: r for r in rows}
    for entry, row in zip(study["samplers"], rows):
        # Each row is compared with its own reference (e.g. DDPM-250 at the same CFG scale).
        row["reference"] = entry.get("reference", study["reference"])
        if row["reference"] not in by_label:
            raise DitlabError(f"reference '{row['reference']}' of '{row['label']}' is not a sampler label in the study")
        ref = by_label[row["reference"]]
        row["fd_vs_reference"] = row["frechet_distance"] / ref["frechet_distance"]
        row["acc_vs_reference"] = row["digits_accuracy"] / ref["digits_accuracy"]
    floor = real_floor(real, int(study["num_samples"]), cache_dir, int(study["seed"]))
    write_results(rows, study, floor, outputs)
    return rows


def meets_goal(row: dict[str, Any], goal: dict[str, Any]) -> bool:
    tol = float(goal["tolerance"])
    return row["nfe"] <= goal["max_nfe"] and row["fd_vs_reference"] <= 1 + tol and row["acc_vs_reference"] >= 1 - tol


def write_results(rows: list[dict[str, Any]], study: dict[str, Any], floor: float, outputs: list[Path]) -> None:
    csv_path, md_path, png_path = outputs
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "meets_goal"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {**row, "cfg_interval": json.dumps(row["cfg_interval"]), "meets_goal": meets_goal(row, study["goal"])}
            )
    goal = study["goal"]
    lines = [
        "| sampler | objective | CFG scale | NFE (model calls) | digit accuracy | Fréchet distance | FD / reference "
        f"| ≤ {goal['max_nfe']} NFE and within {goal['tolerance']:.0%} of the reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['objective']} | {r['cfg_scale']:g} | {r['nfe']} ({r['model_calls']}) "
            f"| {r['digits_accuracy']:.3f} | {r['frechet_distance']:.1f} "
            f"| {r['fd_vs_reference']:.2f} ({r['reference']}) | {'yes' if meets_goal(r, goal) else 'no'} |"
        )
    r0 = rows[0]
    lines += [
        "",
        f"{r0['num_samples']} class-balanced samples per row, seed {r0['seed']} unless named, guidance on "
        f"`{r0['cfg_channels']}` channels, interval {r0['cfg_interval']}. Fréchet distance in the digit "
        f"classifier's 64-d feature space against all 1,797 real digits; {r0['num_samples']} of those real "
        f"digits score {floor:.2f} (the floor).",
    ]
    md_path.write_text("\n".join(lines) + "\n")
    plot(rows, floor, png_path)


def plot(rows: list[dict[str, Any]], floor: float, path: Path) -> None:
    """One row of panels per CFG scale: Fréchet distance and accuracy against NFE (log scale)."""
    from ditlab.extras import require

    require("report", "the sampler study's plot")
    import matplotlib  # lazy: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    scales = sorted({r["cfg_scale"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(len(scales), 2, figsize=(12, 4.2 * len(scales)), squeeze=False)
    for (ax_fd, ax_acc), scale in zip(axes, scales):
        for ax, key, what in (
            (ax_fd, "frechet_distance", "Fréchet distance (classifier features), lower is better"),
            (ax_acc, "digits_accuracy", "digit accuracy, higher is better"),
        ):
            for objective, marker, color in (("ddpm", "o", "tab:blue"), ("flow", "s", "tab:orange")):
                pts = [r for r in rows if r["objective"] == objective and r["cfg_scale"] == scale]
                ax.scatter(
                    [r["nfe"] for r in pts],
                    [r[key] for r in pts],
                    marker=marker,
                    color=color,
                    label=f"{objective} objective",
                )
                for r in pts:
                    text = re.sub(r" cfg[0-9.]+", "", r["label"]).replace("flow ", "")
                    ax.annotate(text, (r["nfe"], r[key]), fontsize=6, xytext=(4, 2), textcoords="offset points")
            if key == "frechet_distance":
                ax.axhline(floor, color="gray", linestyle=":", label="real digits (floor)")
            ax.set_xscale("log")
            ax.set_xticks([20, 50, 100, 200, 500])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("network evaluations per sample (NFE, CFG doubling included)")
            ax.set_title(f"CFG scale {scale:g}: {what}", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ditlab.tools.sampler_study", description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path, help="study YAML (e.g. experiments/samplers/study.yaml)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the trained runs live")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with one_line_errors():
        run_study(args.study, args.runs_dir, args.overwrite)


if __name__ == "__main__":
    main()
