"""The joint law over a sweep's evaluations and the answer to "I have budget C: what do I train?".

``joint_study`` gathers every (run, evaluation) point of the law's metric (default ``val_loss``),
fits :func:`ditlab.report.law.fit_joint_law`, and for a budget C (training Gflops, the report's
compute axis: C = 3 · Gflops · images, :func:`ditlab.report.collect.training_compute`) gives

* the compute-optimal forward Gflops per image G_opt(C) and images D_opt(C), with intervals;
* the nearest size × patch among ``conf/model`` presets, counted with ditlab's own accounting
  (``ditlab-flops``'s :func:`count_composition`, meta device) at the sweep's latent shape;
* its steps at the sweep's global batch and its predicted loss (95 % interval for one new run);
* the predicted sweep metric (e.g. ``fd_digits``) through ``metric = k · loss^m`` fitted over each
  run's final evaluation that has both.

Bad input (too few points or distinct sizes/lengths, a budget the sweep cannot vouch for, runs
without the metric) raises :class:`DitlabError` before anything is written.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ditlab.errors import DitlabError
from ditlab.report.collect import Run, training_compute
from ditlab.report.fits import PowerLawFit, fit_scaling
from ditlab.report.law import JointLaw, fit_joint_law, interval_list

DEFAULT_LAW_METRIC = "val_loss"
MAX_EXTRAPOLATION = 100.0  # a budget above 100x the sweep's largest training compute is refused
PATCH_SIZES = (1, 2, 4, 8)
CALIBRATION = (
    "nominal 95 % intervals covered, on synthetic sweeps with known laws (experiments/scaling_calibration): "
    "joint law 94.2-97.2 % for alpha, beta, a new run and L_opt(C), 96.8 % for the allocation exponent a "
    "(99.2 % with per-run offsets: conservative); final-value fits 93.5-96.3 % for n = 5...10 runs"
)


def law_points(
    runs: list[Run], metric: str, from_step: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(G, D, L, run names): every evaluation (at step ``from_step`` or later) of a non-failed run with
    known Gflops that has the metric."""
    G, D, L, names = [], [], [], []
    for run in runs:
        gflops = run.summary.get("gflops")
        if run.status == "failed" or not isinstance(gflops, (int, float)) or gflops <= 0:
            continue
        for row in run.history:
            if from_step and (row.get("step") or 0) < from_step:
                continue  # before the EMA forgot its initialisation: not on the law (docs/scaling.md)
            value, seen = row.get(metric), row.get("images_seen")
            if isinstance(value, (int, float)) and isinstance(seen, (int, float)) and seen > 0 and value > 0:
                G.append(float(gflops))
                D.append(float(seen))
                L.append(float(value))
                names.append(run.name)
    return np.array(G), np.array(D), np.array(L), names


def law_metric_for(runs: list[Run], requested: str | None) -> str | None:
    """The metric to fit the law to: the requested one, else ``val_loss`` when any run logged it."""
    if requested:
        return requested
    return DEFAULT_LAW_METRIC if any(DEFAULT_LAW_METRIC in row for r in runs for row in r.history) else None


def joint_study(
    runs: list[Run],
    law_metric: str,
    budget: float | None = None,
    sweep_metric: str | None = None,
    from_step: int = 0,
) -> dict[str, Any]:
    """The fitted law (as a dict with the :class:`JointLaw` under ``"_law"``) and, with a budget, the
    recommendation. Raises DitlabError for bad input when a budget is asked for."""
    G, D, L, names = law_points(runs, law_metric, from_step)
    if not len(L):
        raise DitlabError(
            f"no run has {law_metric} in eval/metrics.jsonl; pick law_metric=NAME from the runs' eval "
            "metrics (val_loss: train with it in eval.metrics, e.g. eval.metrics=[fd_digits,val_loss])"
        )
    law = fit_joint_law(G, D, L, runs=names)
    if not isinstance(law, JointLaw):
        raise DitlabError(f"{law} ({law_metric} over {len(set(names))} runs)")
    compute = training_compute(G, D)
    out: dict[str, Any] = {
        "metric": law_metric,
        "from_step": from_step,
        "runs": sorted(set(names)),
        "fit": law.as_dict(),
        "allocation": {
            "G_opt": "proportional to C^a",
            "D_opt": "proportional to C^(1-a)",
            "a": law.a,
            "a_ci": list(law.a_interval() or []),
            "compute_convention": "C = 3 x forward Gflops per image x images seen (training Gflops)",
        },
        "compute_range": [float(compute.min()), float(compute.max())],
        "runs_without_metric": sorted(r.name for r in runs if r.status != "failed" and r.name not in set(names)),
        "calibration": CALIBRATION,
        "_law": law,
    }
    loss_map = metric_map(runs, law_metric, sweep_metric) if sweep_metric and sweep_metric != law_metric else None
    if isinstance(loss_map, PowerLawFit):
        out["metric_map"] = {"metric": sweep_metric, **loss_map.as_dict()}
    if budget is not None:
        out["budget"] = recommend(law, runs, budget, compute, sweep_metric, loss_map)
    return out


def metric_map(runs: list[Run], law_metric: str, sweep_metric: str) -> PowerLawFit | str:
    """``sweep_metric = k · law_metric^m`` over each run's last evaluation that logged both (t intervals).

    One point per run, all at the end of training: the relation between a loss and a sampled metric
    moves during training (early samples are poor at any loss), so evaluations of one stage are
    compared (measured in experiments/cpu_scaling_law)."""
    pairs = []
    for r in runs:
        both = [
            row
            for row in r.history
            if isinstance(row.get(law_metric), (int, float)) and isinstance(row.get(sweep_metric), (int, float))
        ]
        if r.status != "failed" and both:
            pairs.append((both[-1][law_metric], both[-1][sweep_metric]))
    if not pairs:
        return f"no evaluation has both {law_metric} and {sweep_metric}"
    x, y = np.array(pairs, dtype=float).T
    return fit_scaling(x, y, form="power_law")


def check_budget(budget: float, compute: np.ndarray) -> None:
    lo, hi = float(compute.min()), float(compute.max())
    if not (math.isfinite(budget) and lo <= budget <= MAX_EXTRAPOLATION * hi):
        raise DitlabError(
            f"budget={budget:.4g} training Gflops is outside what the sweep can vouch for: give a budget "
            f"from its smallest evaluated compute {lo:.4g} to {MAX_EXTRAPOLATION:g}x its largest ({hi:.4g}), "
            f"i.e. {lo:.4g}...{MAX_EXTRAPOLATION * hi:.4g}"
        )


def recommend(
    law: JointLaw,
    runs: list[Run],
    budget: float,
    compute: np.ndarray,
    sweep_metric: str | None,
    loss_map: PowerLawFit | str | None,
) -> dict[str, Any]:
    check_budget(budget, compute)
    if law.A <= 0 or law.B <= 0:
        raise DitlabError("the fitted law has no size or no data term (A or B = 0): no compute-optimal allocation")
    g_opt, d_opt, l_opt = law.optimum(budget)
    out: dict[str, Any] = {
        "budget_gflops": budget,
        "extrapolation": budget / float(compute.max()),
        "G_opt": g_opt,
        "G_opt_ci": interval_list(law.log_interval(lambda p: law.optimum(budget, p)[0])),
        "D_opt": d_opt,
        "L_opt": l_opt,
        "L_opt_ci": interval_list(law.log_interval(lambda p: law.optimum(budget, p)[2])),
    }
    batch = sweep_batch(runs)
    presets = preset_gflops(runs)
    if isinstance(presets, str):
        out["preset_note"] = presets
        return out
    name, gflops = min(presets.items(), key=lambda kv: abs(math.log(kv[1] / g_opt)))
    images = budget / training_compute(gflops, 1.0)
    loss = float(law.predict(gflops, images))
    out["preset"] = {
        "model": name,
        "gflops": gflops,
        "images": images,
        "steps": round(images / batch) if batch else None,
        "batch": batch,
        "loss": loss,
        "loss_ci": interval_list(law.loss_interval(gflops, images, new_run=True)),
    }
    out["presets_counted"] = dict(sorted(presets.items(), key=lambda kv: kv[1]))
    if isinstance(loss_map, PowerLawFit) and out["preset"]["loss_ci"]:
        lo_l, hi_l = out["preset"]["loss_ci"]
        ends = [loss_map.interval([v], new_run=True) for v in (lo_l, hi_l)]
        values = [float(e[i][0]) for e in ends if e for i in (0, 1)]
        out["preset"][sweep_metric] = float(loss_map.predict(loss))
        out["preset"][f"{sweep_metric}_ci"] = [min(values), max(values)] if values else None
    elif sweep_metric and isinstance(loss_map, str):
        out["preset"]["metric_note"] = loss_map
    return out


def sweep_batch(runs: list[Run]) -> int | None:
    """The global batch most runs trained with (images seen / steps)."""
    batches = Counter(
        round(r.summary["images_seen"] / r.summary["steps"])
        for r in runs
        if isinstance(r.summary.get("images_seen"), (int, float)) and r.summary.get("steps")
    )
    return batches.most_common(1)[0][0] if batches else None


def preset_gflops(runs: list[Run]) -> dict[str, float] | str:
    """Forward Gflops of every ``conf/model`` size × patch at the sweep's latent shape and block, or why not.
    The latent shape is the one at which ditlab's count reproduces a sweep run's recorded Gflops."""
    from omegaconf import OmegaConf

    from ditlab.config import CONFIG_DIR

    ref = next((r for r in runs if (r.path / "config.yaml").is_file() and r.summary.get("tokens")), None)
    if ref is None:
        return "no run with config.yaml and tokens in its summary: presets not counted"
    cfg = OmegaConf.load(ref.path / "config.yaml")
    shape = _latent_shape(cfg, ref.summary)
    if shape is None:
        return f"could not reproduce {ref.name}'s recorded Gflops from its config: presets not counted"
    side, channels, learn_sigma = shape
    out = {}
    for path in sorted(Path(CONFIG_DIR, "model").glob("*.yaml")):
        preset = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items() if k != "defaults"}
        for patch in PATCH_SIZES:
            if side % patch:
                continue
            model_cfg = OmegaConf.merge(cfg.model, preset, {"patch_size": patch})
            name, gflops = _count(model_cfg, cfg.block, side, channels, learn_sigma)
            out[name] = gflops
    return out


def _count(model_cfg: Any, block_cfg: Any, side: int, channels: int, learn_sigma: bool) -> tuple[str, float]:
    """(size/patch tag, forward Gflops per image): ditlab's accounting on the meta device, the closed form
    (instant) where the block declares one, else the measured count (ditlab.models.accounting)."""
    import torch

    from ditlab.build import build_model
    from ditlab.models.accounting import closed_form_gflops, measured_gflops
    from ditlab.models.dit import model_tag

    with torch.device("meta"):
        model = build_model(model_cfg, block_cfg, channels, side, 2 * channels if learn_sigma else channels, 10)
    gflops = closed_form_gflops(model)
    return model_tag(model_cfg.name, model_cfg.patch_size), float(
        gflops if gflops is not None else measured_gflops(model)
    )


def _latent_shape(cfg: Any, summary: dict[str, Any]) -> tuple[int, int, bool] | None:
    patch = int(cfg.model.patch_size)
    side = patch * int(round(math.sqrt(float(summary["tokens"]))))
    for channels in (1, 3, 4, 8, 16):
        for learn_sigma in (False, True):
            if math.isclose(
                _count(cfg.model, cfg.block, side, channels, learn_sigma)[1], summary["gflops"], rel_tol=1e-4
            ):
                return side, channels, learn_sigma
    return None
