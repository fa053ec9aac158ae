"""``ditlab-report holdout=N`` scores the joint law on the held-out runs; the report goes to the sweep's
wandb group as one more (offline) run, read back without a server."""

import json

import pytest
from omegaconf import OmegaConf
from test_report_law import make_law_sweep, surface

from ditlab.report.budget import law_points
from ditlab.report.cli import main
from ditlab.report.collect import collect_runs
from ditlab.report.law import fit_joint_law


def test_holdout_predicts_the_held_out_runs_with_the_law_fitted_on_the_others(tmp_path, capsys):
    make_law_sweep(tmp_path / "sweep")
    main([f"sweep={tmp_path / 'sweep'}", "holdout=2"])
    assert "joint law, held out" in capsys.readouterr().out
    result = json.loads((tmp_path / "sweep/report/scaling.json").read_text())
    h = result["joint_law"]["holdout"]
    assert h["held_out"] == result["study"]["held_out"] and len(h["fit_runs"]) == 4  # the report's split
    runs = [r for r in collect_runs(tmp_path / "sweep") if r.name in h["fit_runs"]]
    G, D, L, names = law_points(runs, "val_loss")
    law = fit_joint_law(G, D, L, runs=names)  # the same fit, by hand
    assert h["fit"]["alpha"] == pytest.approx(law.alpha, rel=1e-9) and h["fit"]["n"] == 20
    for row in h["predictions"]:
        s = row["val_loss"]
        truth = float(surface(row["gflops"], row["images_seen"]))
        assert s["predicted"] == pytest.approx(float(law.predict(row["gflops"], row["images_seen"])))
        assert s["ci95"][0] < s["actual"] < s["ci95"][1] and s["inside"] is True
        assert s["rel_error"] == pytest.approx(s["predicted"] / s["actual"] - 1)
        assert abs(s["predicted"] / truth - 1) < 0.05  # 0.5 % noise: the law extrapolates the surface
        fd = row["fd_digits"]  # through the loss -> fd_digits map of the fit runs
        assert fd["ci95"][0] < fd["actual"] < fd["ci95"][1] and fd["predicted"] == pytest.approx(
            3 * truth**1.5, rel=0.1
        )
    md = (tmp_path / "sweep/report/report.md").read_text()
    assert "### Held-out runs: the joint law fitted on the 4 cheaper runs" in md
    assert md.count("| 3200 | val_loss |") == 2 and md.count("| 3200 | fd_digits |") == 2


def with_wandb_logger(sweep, **wandb_cfg):
    for cfg_path in sweep.glob("*/config.yaml"):
        cfg = OmegaConf.load(cfg_path)
        cfg.logger = {"wandb": {"name": "wandb", "project": "scaling", "entity": None, "mode": None, **wandb_cfg}}
        OmegaConf.save(cfg, cfg_path)


def test_the_report_is_logged_to_the_sweeps_wandb_group_offline(tmp_path, monkeypatch, capsys):
    from ditlab.training.wandb_offline import offline_run_files, read_offline_run

    monkeypatch.delenv("WANDB_MODE", raising=False)  # no mode and no login: offline, not a failed online start
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    sweep = tmp_path / "2026-12-05_10-00-00"
    make_law_sweep(sweep)
    with_wandb_logger(sweep)
    main([f"sweep={sweep}", "holdout=2"])
    assert "wandb: report run" in capsys.readouterr().out
    files = offline_run_files(sweep / "report")
    assert len(files) == 1
    logged = read_offline_run(files[0])
    result = json.loads((sweep / "report/scaling.json").read_text())
    assert logged["complete"] and logged["run"]["group"] == sweep.name  # the training runs' group
    s = logged["summary"]
    assert s["joint_law"]["fit"]["alpha"] == pytest.approx(result["joint_law"]["fit"]["alpha"])
    assert s["joint_law"]["calibration"] == result["joint_law"]["calibration"]
    assert s["joint_law"]["holdout"]["predictions"][0]["val_loss"]["predicted"] == pytest.approx(
        result["joint_law"]["holdout"]["predictions"][0]["val_loss"]["predicted"]
    )
    assert s["study"]["fits"]["compute"]["b"] == pytest.approx(result["study"]["fits"]["compute"]["b"])
    for plot in ("law_val_loss", "gflops_vs_fd_digits"):  # the plots, as wandb images
        assert logged["history"][f"report/{plot}/_type"] == "image-file", sorted(logged["history"])


def test_wandb_false_or_a_sweep_without_wandb_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    make_law_sweep(tmp_path / "plain")
    main([f"sweep={tmp_path / 'plain'}"])
    make_law_sweep(tmp_path / "off")
    with_wandb_logger(tmp_path / "off", group="mine")
    main([f"sweep={tmp_path / 'off'}", "wandb=false"])
    for sweep in ("plain", "off"):
        assert (tmp_path / sweep / "report/report.md").is_file()
        assert not (tmp_path / sweep / "report/wandb").exists()
        assert "wandb" not in json.loads((tmp_path / sweep / "report/scaling.json").read_text())
