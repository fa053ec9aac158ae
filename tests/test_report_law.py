"""The joint law L(G, D) = E + A G^-alpha + B D^-beta, its compute-optimal allocation, the calibration of the
report's intervals, and ``ditlab-report --budget`` on a synthetic sweep folder (bad inputs included)."""

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.stats import t as student_t

from ditlab.config import CONFIG_DIR
from ditlab.report.calibration import CASES, coverage
from ditlab.report.cli import main
from ditlab.report.law import JointLaw, fit_joint_law

LAW = {"E": 0.2, "A": 0.004, "B": 30.0, "alpha": 0.45, "beta": 0.6}  # G in Gflops, D in images
BATCH = 128
STEPS = (200, 400, 800, 1600, 3200)


def surface(G, D, p=LAW):
    return (
        p["E"] + p["A"] * np.asarray(G, dtype=float) ** -p["alpha"] + p["B"] * np.asarray(D, dtype=float) ** -p["beta"]
    )


@pytest.mark.parametrize("alpha,beta", [(0.35, 0.6), (0.6, 0.3), (0.25, 0.5)])
def test_noise_free_surfaces_give_back_the_allocation_exponent(alpha, beta):
    G, D = (v.ravel() for v in np.meshgrid(np.geomspace(0.01, 1.0, 7), np.geomspace(2e3, 2e5, 8)))
    p = {"E": 0.3, "A": 0.2, "B": 30.0, "alpha": alpha, "beta": beta}
    law = fit_joint_law(G, D, surface(G, D, p))
    assert isinstance(law, JointLaw)
    assert law.a == pytest.approx(beta / (alpha + beta), abs=0.01)
    assert law.alpha == pytest.approx(alpha, abs=0.01) and law.E == pytest.approx(0.3, rel=0.02)


def test_the_optimum_is_the_minimum_along_the_budget():
    G, D = (v.ravel() for v in np.meshgrid(np.geomspace(0.01, 1.0, 6), np.geomspace(2e3, 2e5, 6)))
    law = fit_joint_law(G, D, surface(G, D))
    C = 1e6
    g_opt, d_opt, l_opt = law.optimum(C)
    assert 3 * g_opt * d_opt == pytest.approx(C)
    grid = np.geomspace(g_opt / 10, g_opt * 10, 2001)
    brute = law.predict(grid, C / (3 * grid))
    assert l_opt == pytest.approx(brute.min(), rel=1e-6) and grid[brute.argmin()] == pytest.approx(g_opt, rel=0.01)
    g2 = law.optimum(100 * C)[0]
    assert np.log(g2 / g_opt) / np.log(100) == pytest.approx(law.a, abs=1e-9)  # G_opt ∝ C^a


def test_too_few_points_or_sizes_are_refused():
    assert fit_joint_law([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]).startswith("no joint-law fit: 5 (G, D)")
    G, D = (v.ravel() for v in np.meshgrid([0.01, 0.02], [1e3, 2e3, 4e3, 8e3]))
    assert "2 distinct model sizes" in fit_joint_law(G, D, surface(G, D))


def test_run_offsets_give_each_quantity_its_own_degrees_of_freedom():
    """With a per-run offset, beta (pinned by the evaluations within a run) gets far more degrees of
    freedom than alpha (pinned by the runs alone); the covariance is the sum of its two components."""
    rng = np.random.default_rng(0)
    G, D = (v.ravel() for v in np.meshgrid(np.geomspace(0.002, 0.064, 6), np.geomspace(3e4, 5e5, 5)))
    offsets = dict(zip(np.unique(G), rng.normal(0, 0.02, 6)))
    L = surface(G, D) * np.exp(rng.normal(0, 0.01, len(G)) + np.array([offsets[g] for g in G]))
    law = fit_joint_law(G, D, L)
    (s_e, m_e, _, dof_e), (s_b, m_b, _, dof_b) = law.components
    assert (dof_e, dof_b) == (30 - 6 - 2, 6 - 3)
    assert np.allclose(law.cov, s_e * m_e + s_b * m_b)
    assert min(np.linalg.eigvalsh(m_e)) > -1e-12 * np.abs(m_e).max()  # positive semi-definite

    def dof(i):  # the Satterthwaite degrees of freedom the interval of parameter i uses
        parts = [ms * M[i, i] for ms, M, _, _ in law.components]
        return sum(parts) ** 2 / sum(w**2 / nu for w, (_, _, _, nu) in zip(parts, law.components))

    assert dof(4) > 2 * dof(3) and 3 <= dof(3) < 10 and dof(4) > 10  # beta vs alpha
    lo, hi = law.param_interval("alpha")
    half = student_t.ppf(0.975, np.floor(dof(3))) * np.sqrt(law.cov[3, 3])  # dof rounded down
    assert hi - law.alpha == pytest.approx(half, rel=1e-9)


@pytest.mark.parametrize(
    "name,sweeps,floor",
    [
        ("power law, n=6, t", 400, 0.92),  # the former percentile bootstrap: 85.5-91 % here
        ("irreducible, n=5, t", 60, 0.85),
        ("joint law, 6 runs x 5 evals, 1 % scatter", 40, 0.85),
        ("joint law, + 1 % per-run offset (correlated evals)", 40, 0.85),
    ],
)
def test_intervals_cover_about_95_percent(name, sweeps, floor):
    """A fast look at the calibration study (experiments/scaling_calibration measures 400-1000 sweeps)."""
    result = coverage(next(c for c in CASES if c["name"] == name), sweeps, seed=11)
    for quantity, share in result["coverage"].items():
        assert floor <= share <= 0.95 + (0.95 - floor), (quantity, share)  # symmetric about 95 %


@pytest.mark.slow
def test_intervals_are_calibrated_on_many_sweeps():
    for name in ("power law, n=5, t", "irreducible, n=6, t", "joint law, 6 runs x 5 evals, 1 % scatter"):
        result = coverage(next(c for c in CASES if c["name"] == name), 1000, seed=3)
        for quantity, share in result["coverage"].items():
            assert 0.93 <= share <= 0.97, (name, quantity, share)


def model_cfgs(size, patch):
    base = OmegaConf.load(Path(CONFIG_DIR, "model/base/dit.yaml"))
    preset = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR, f"model/{size}.yaml"))).items()
              if k != "defaults"}  # fmt: skip
    return OmegaConf.merge(base, preset, {"patch_size": patch}), OmegaConf.load(
        Path(CONFIG_DIR, "block/adaln_zero.yaml")
    )


def make_law_sweep(root, noise=0.005, seed=0, with_val_loss=True):
    """Runs as ditlab-train writes them (config.yaml, summary.json, eval/metrics.jsonl) on 8x8 one-channel
    latents; val_loss follows LAW at each evaluation, fd_digits = 3 * val_loss^1.5."""
    from ditlab.tools.flops_cli import count_composition

    rng = np.random.default_rng(seed)
    for i, (size, patch) in enumerate(
        [("tiny", 4), ("tiny", 2), ("small", 4), ("tiny", 1), ("small", 2), ("small", 1)]
    ):
        model, block = model_cfgs(size, patch)
        rec = count_composition(model, block, 8, 1, 10, True)
        run = root / f"{i}_{size}_{patch}"
        (run / "eval").mkdir(parents=True)
        OmegaConf.save({"model": model, "block": block}, run / "config.yaml")
        rows = []
        for s in STEPS:
            loss = float(surface(rec["gflops"], s * BATCH) * np.exp(rng.normal(0, noise)))
            row = {"step": s, "images_seen": s * BATCH, "fd_digits": 3 * loss**1.5 * np.exp(rng.normal(0, noise))}
            if with_val_loss:
                row["val_loss"] = loss
            rows.append(row)
        (run / "eval/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary = {"status": "finished", "model": rec["name"], "patch_size": patch, "block": "adaln_zero",
                   "gflops": rec["gflops"], "tokens": rec["tokens"], "steps": STEPS[-1],
                   "images_seen": STEPS[-1] * BATCH, "train_compute_gflops": 3 * rec["gflops"] * STEPS[-1] * BATCH,
                   "metrics": {"fd_digits": rows[-1]["fd_digits"]}}  # fmt: skip
        (run / "summary.json").write_text(json.dumps(summary))


def test_budget_recommends_a_preset_steps_and_a_loss_with_an_interval(tmp_path, capsys):
    make_law_sweep(tmp_path / "sweep")
    make_law_sweep(tmp_path / "other", with_val_loss=False)
    (tmp_path / "other/0_tiny_4").rename(tmp_path / "sweep/9_no_val_loss")  # listed as left out, not fitted
    runs = json.loads((tmp_path / "sweep/0_tiny_4/summary.json").read_text())
    budget = 10 * runs["train_compute_gflops"] * 8  # inside the sweep's range x 100
    main([f"sweep={tmp_path / 'sweep'}", f"budget={budget}"])
    out = capsys.readouterr().out
    assert "joint law of val_loss" in out and "steps at batch 128" in out
    report = tmp_path / "sweep/report"
    joint = json.loads((report / "scaling.json").read_text())["joint_law"]
    fit, rec = joint["fit"], joint["budget"]
    assert (
        fit["alpha"] == pytest.approx(LAW["alpha"], abs=0.15)
        and fit["ci"]["beta"][0] < LAW["beta"] < fit["ci"]["beta"][1]
    )
    assert joint["allocation"]["a_ci"][0] < joint["allocation"]["a"] < joint["allocation"]["a_ci"][1]
    preset = rec["preset"]
    presets = rec["presets_counted"]
    assert "DiT-S/2" in presets and presets["DiT-tiny/4"] < presets["DiT-small/1"]
    nearest = min(presets, key=lambda k: abs(np.log(presets[k] / rec["G_opt"])))
    assert preset["model"] == nearest and preset["steps"] == round(budget / (3 * presets[nearest]) / BATCH)
    truth = float(surface(preset["gflops"], preset["images"]))
    assert preset["loss_ci"][0] < truth < preset["loss_ci"][1] and preset["loss"] == pytest.approx(truth, rel=0.05)
    assert preset["fd_digits_ci"][0] < 3 * truth**1.5 < preset["fd_digits_ci"][1]  # through the loss -> fd map
    assert joint["runs_without_metric"] == ["9_no_val_loss"] and len(joint["runs"]) == 6
    assert "calibration" in joint and (report / "law_val_loss.png").read_bytes()[:4] == b"\x89PNG"
    md = (report / "report.md").read_text()
    assert "## Joint scaling law of val_loss" in md and f"**{preset['model']}**" in md


def test_law_from_step_leaves_out_the_warm_up_and_the_metric_map_compares_final_evaluations(tmp_path, capsys):
    """Evaluations during the EMA's warm-up are off the law (here 3x its loss, samples saturated at
    fd_digits 400): law_from_step leaves them out; the loss -> fd_digits map uses each run's last one."""
    make_law_sweep(tmp_path / "sweep")
    for metrics in (tmp_path / "sweep").glob("*/eval/metrics.jsonl"):
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        warm_up = {"step": 50, "images_seen": 50 * BATCH, "val_loss": 3 * rows[0]["val_loss"], "fd_digits": 400.0}
        metrics.write_text("".join(json.dumps(r) + "\n" for r in [warm_up, *rows]))
    fits = {}
    for from_step in (0, 200):
        out = tmp_path / f"report_{from_step}"
        main([f"sweep={tmp_path / 'sweep'}", f"law_from_step={from_step}", f"out={out}", "wandb=false"])
        fits[from_step] = json.loads((out / "scaling.json").read_text())["joint_law"]
    capsys.readouterr()
    assert fits[0]["fit"]["n"] == 36 and fits[200]["fit"]["n"] == 30 and fits[200]["from_step"] == 200
    assert abs(fits[200]["fit"]["alpha"] - LAW["alpha"]) < 0.1
    assert fits[0]["fit"]["rmse_log"] > 5 * fits[200]["fit"]["rmse_log"]  # the warm-up is off the law
    assert fits[200]["fit"]["ci"]["beta"][0] < LAW["beta"] < fits[200]["fit"]["ci"]["beta"][1]
    for joint in fits.values():  # 6 runs, their final evaluations: fd_digits = 3 * val_loss^1.5
        assert joint["metric_map"]["n"] == 6 and joint["metric_map"]["b"] == pytest.approx(1.5, abs=0.1)
    assert "(from step 200)" in (tmp_path / "report_200/report.md").read_text()


def test_bad_budget_inputs_name_what_is_missing_and_write_nothing(tmp_path, capsys):
    make_law_sweep(tmp_path / "sweep")
    make_law_sweep(tmp_path / "no_loss", with_val_loss=False)
    for folder, args, message in [
        ("sweep", ["budget=1e30"], "outside what the sweep can vouch for"),
        ("sweep", ["budget=1"], "outside what the sweep can vouch for"),
        ("no_loss", ["budget=1e6"], "no run logged val_loss"),
        ("sweep", ["budget=1e6", "law_metric=kid"], "no run has kid"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main([f"sweep={tmp_path / folder}", *args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / folder / "report").exists()
    few = tmp_path / "few"
    for run in ("0_tiny_4", "1_tiny_2"):  # two model sizes: the size exponent is not pinned down
        (few / run).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sweep" / run).rename(few / run)
    with pytest.raises(SystemExit) as exit_:
        main([f"sweep={few}", "budget=1e6"])
    assert exit_.value.code == 2 and "2 distinct model sizes" in capsys.readouterr().err
    assert not (few / "report").exists()
