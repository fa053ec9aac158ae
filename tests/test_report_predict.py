"""ditlab-report as a predictor: fits with intervals on synthetic power-law sweeps with known exponents,
refused fits from too few points, --holdout errors, the compute-optimal frontier and its plots."""

import json

import numpy as np
import pytest

from ditlab.report.cli import main
from ditlab.report.fits import PowerLawFit, fit_scaling
from ditlab.report.frontier import CurvePoint, frontier, frontier_owners

BATCH, STEPS = 128, 1000
E, A, B = 3.0, 40.0, -0.35  # the law every synthetic sweep follows: fd = E + A * C^B


def law(c):
    return E + A * np.asarray(c, dtype=float) ** B


def make_sweep(root, gflops, noise=0.01, seed=0):
    """One run folder per model, as ditlab-train writes them: summary.json + eval/metrics.jsonl. Final values
    follow the law; earlier evaluations lag it (1.5x at step 0, shrinking), so a big model is worse than a
    small one at equal early compute and the frontier passes from small to big models."""
    rng = np.random.default_rng(seed)
    for i, g in enumerate(gflops):
        run = root / f"{i}_run{i}"
        (run / "eval").mkdir(parents=True)
        c = 3 * g * BATCH * STEPS
        final = float(law(c) * np.exp(rng.normal(0, noise)))
        history = []
        for s in (250, 500, 750, 1000):
            v = final if s == STEPS else float(law(3 * g * BATCH * s) * (1 + 0.5 * (1 - s / STEPS)))
            history.append({"step": s, "images_seen": s * BATCH, "fd_digits": v, "final": s == STEPS})
        (run / "eval" / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        summary = {
            "status": "finished",
            "model": f"DiT-m{i}/2",
            "patch_size": 2,
            "block": "adaln_zero",
            "gflops": g,
            "steps": STEPS,
            "images_seen": STEPS * BATCH,
            "train_compute_gflops": c,
            "metrics": {"fd_digits": final},
            "metrics_lower_is_better": {"fd_digits": True},
        }
        (run / "summary.json").write_text(json.dumps(summary))


def test_known_exponents_are_recovered_inside_their_intervals():
    rng = np.random.default_rng(1)
    c = np.geomspace(1e3, 1e7, 9)
    fit = fit_scaling(c, law(c) * np.exp(rng.normal(0, 0.01, len(c))))
    assert fit.form == "irreducible" and not fit.flags
    assert fit.ci["b"][0] < B < fit.ci["b"][1] and fit.ci["e"][0] < E < fit.ci["e"][1]
    assert fit.b == pytest.approx(B, abs=0.03) and fit.e == pytest.approx(E, abs=0.3)
    pure = fit_scaling(c, 500 * c**-0.3 * np.exp(rng.normal(0, 0.01, len(c))))
    assert pure.form == "power_law" and pure.ci["b"][0] < -0.3 < pure.ci["b"][1]  # no floor in the data: none fitted


def test_too_few_points_are_refused_or_flagged():
    assert fit_scaling([1e3, 1e4], [10.0, 5.0]).startswith(
        "no fit: 2 distinct point(s)"
    )  # not "R² = 1 from two points"
    assert fit_scaling([1e3, 1e3, 1e3], [10.0, 9.0, 11.0]).startswith("no fit: 1 distinct")
    few = fit_scaling([1e3, 1e4, 1e5], [10.0, 5.1, 2.4], bootstrap=50)
    assert isinstance(few, PowerLawFit) and few.form == "power_law" and "few points: n = 3" in few.flags[0]
    assert fit_scaling([1e3, 1e4, 1e5, 1e6], law([1e3, 1e4, 1e5, 1e6]), form="irreducible").startswith("no irreducible")


def test_frontier_keeps_the_best_point_at_or_below_each_compute():
    pts = [
        CurvePoint(1, 10, 1, "a", "A"),
        CurvePoint(2, 8, 2, "a", "A"),
        CurvePoint(4, 7.5, 4, "a", "A"),
        CurvePoint(2, 9, 1, "b", "B"),
        CurvePoint(4, 6, 2, "b", "B"),
        CurvePoint(8, 4, 4, "b", "B"),
        CurvePoint(8, 4.5, 8, "a", "A"),
    ]
    front = frontier(pts)
    assert [(p.compute, p.value, p.run) for p in front] == [(1, 10, "a"), (2, 8, "a"), (4, 6, "b"), (8, 4, "b")]
    assert [(o["model"], o["compute_from"], o["compute_to"]) for o in frontier_owners(front)] == [
        ("A", 1, 2),
        ("B", 4, 8),
    ]
    assert [p.value for p in frontier(pts, lower_is_better=False)] == [10]  # accuracy-like: higher is better


def test_report_fits_predicts_held_out_runs_and_draws_the_frontier(tmp_path, capsys):
    gflops = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128]
    make_sweep(tmp_path / "sweep", gflops)
    main([str(tmp_path / "sweep"), "--holdout", "2", "--bootstrap", "200"])
    out = capsys.readouterr().out
    assert "held out DiT-m7/2" in out and "frontier: DiT-m0/2" in out
    report = tmp_path / "sweep" / "report"
    study = json.loads((report / "scaling.json").read_text())["study"]
    assert study["held_out"] == ["6_run6", "7_run7"] and len(study["fit_runs"]) == 6
    compute_fit = study["fits"]["compute"]
    assert compute_fit["ci"]["b"][0] < B < compute_fit["ci"]["b"][1]
    for row in study["predictions"]:  # 1 % noise: the held-out runs are predicted to a few percent
        assert abs(row["fit"]["compute"]["rel_error"]) < 0.05 and abs(row["fit"]["gflops"]["rel_error"]) < 0.05
        truth = float(law(row["train_compute_gflops"]))  # the noise-free law lies inside the prediction interval
        assert (
            row["fit"]["compute"]["lo"] < truth < row["fit"]["compute"]["hi"]
            and row["fit"]["compute"]["extrapolation"] > 1
        )
    owners = [o["model"] for o in study["frontier_owners"]]
    assert owners[0] == "DiT-m0/2" and owners[-1] == "DiT-m7/2"
    assert owners == sorted(owners, key=lambda m: int(m[5:-2]))  # bigger models own more compute, never back
    md = (report / "report.md").read_text()
    assert "## Scaling fits (6 runs fitted; 2 most expensive held out)" in md and "95 %" in md
    assert "## Held-out runs" in md and "## Compute-optimal frontier" in md
    for png in ("gflops_vs_fd_digits.png", "compute_vs_fd_digits.png", "frontier_fd_digits.png"):
        assert (report / png).read_bytes()[:4] == b"\x89PNG"


def test_report_refuses_fits_from_two_runs_and_a_holdout_that_leaves_too_few(tmp_path, capsys):
    make_sweep(tmp_path / "two", [0.001, 0.004])
    main([str(tmp_path / "two"), "--bootstrap", "0"])
    out = capsys.readouterr().out
    assert "fit vs training compute C: no fit: 2 distinct point(s)" in out
    assert "no fit: 2 distinct" in (tmp_path / "two" / "report" / "report.md").read_text()
    make_sweep(tmp_path / "four", [0.001, 0.002, 0.004, 0.008])
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "four"), "--holdout", "2"])
    assert exit_.value.code == 2 and "lower --holdout" in capsys.readouterr().err
    assert not (tmp_path / "four" / "report").exists()  # refused before anything was written


def test_at_step_compares_runs_as_they_were_then_unfinished_ones_included(tmp_path, capsys):
    make_sweep(tmp_path / "sweep", [0.001, 0.002, 0.004, 0.008])
    running = tmp_path / "sweep" / "4_running"  # still training: config, logger hparams, eval history; no summary
    (running / "eval").mkdir(parents=True)
    (running / "logs" / "version_0").mkdir(parents=True)
    (running / "config.yaml").write_text(
        "model: {name: small, patch_size: 2}\nblock: {name: adaln_zero}\nrun_name: r\n"
    )
    (running / "logs" / "version_0" / "hparams.yaml").write_text("model/gflops: 0.016\n")
    (running / "eval" / "metrics.jsonl").write_text(
        json.dumps({"step": 500, "images_seen": 500 * BATCH, "fd_digits": 9.5, "seconds": 3.0, "final": False}) + "\n"
    )
    main([str(tmp_path / "sweep"), "--at-step", "500", "--bootstrap", "0"])
    out = capsys.readouterr().out
    assert "5 runs (5 finished, 0 failed, 0 unfinished) as of step 500" in out
    study = json.loads((tmp_path / "sweep" / "report" / "scaling.json").read_text())
    rows = {r["run"]: r for r in csv_rows(tmp_path / "sweep" / "report" / "report.csv")}
    assert rows["4_running"]["model"] == "DiT-small/2" and float(rows["4_running"]["fd_digits"]) == 9.5
    assert float(rows["4_running"]["train_compute_gflops"]) == pytest.approx(3 * 0.016 * 500 * BATCH)
    assert int(rows["0_run0"]["steps"]) == 500  # a finished 1000-step run, as it was at step 500
    assert study["study"]["fits"]["compute"]["n"] == 5
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "sweep"), "--at-step", "123", "--out", str(tmp_path / "r2")])
    assert exit_.value.code == 2 and "no run has an evaluation at step 123" in capsys.readouterr().err


def csv_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))
