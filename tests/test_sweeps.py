"""Hydra multirun end to end: a grid with one failing job, one wandb run per job, then ditlab-report."""

import csv
import json

import numpy as np
import pytest
from conftest import FAST, run_cli
from omegaconf import OmegaConf
from test_eval_callback import EVAL, SHARED_CACHE

from ditlab.errors import DitlabError
from ditlab.report.analysis import power_law_fit, spearman
from ditlab.sweep.jobs import check_sweep_strategy
from ditlab.training.wandb_offline import offline_run_files, read_offline_run


def test_multirun_grid_with_a_failing_job_then_report(tmp_path):
    # patch 3 does not divide 8: that job fails, the other two still run.
    res = run_cli(
        "ditlab-train",
        "-m",
        *FAST,
        *EVAL,
        "logger=wandb",
        "model.patch_size=2,4,3",
        cwd=tmp_path,
        env={"DITLAB_CACHE": SHARED_CACHE, "WANDB_MODE": "offline"},
        timeout=400,
    )
    assert res.returncode == 1, res.stderr[-3000:]
    assert "ditlab: error in sweep job 2" in res.stderr and "2 finished, 1 failed" in res.stderr
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    summaries = [json.loads((j / "summary.json").read_text()) for j in jobs]
    assert [s["status"] for s in summaries] == ["finished", "finished", "failed"]
    assert "model.patch_size" in summaries[2]["error"] and summaries[2]["model"] == "DiT-tiny/3"
    # One wandb run per job (finished after each), grouped by the sweep folder.
    runs = [read_offline_run(offline_run_files(j)[0])["run"] for j in jobs[:2]]
    assert all(len(offline_run_files(j)) == 1 for j in jobs[:2])
    assert runs[0]["id"] != runs[1]["id"] and {r["group"] for r in runs} == {sweep.name}
    # The run names: the readable part, then the same hash of the options both jobs share (FAST, EVAL).
    names = sorted(r["name"] for r in runs)
    assert names[0].startswith("digits_DiT-tiny-2_adaln_zero_ddpm_seed0_") and names[1] == names[0].replace(
        "-2_", "-4_"
    )

    started = sweep / "9_killed_run"  # a run that started and never wrote a summary
    started.mkdir()
    (started / "config.yaml").write_text(
        OmegaConf.to_yaml(
            {"model": {"name": "small", "patch_size": 2}, "block": {"name": "adaln"}, "run_name": "killed"}
        )
    )
    res = run_cli("ditlab-report", str(sweep), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "4 runs (2 finished, 1 failed, 1 unfinished)" in res.stdout and "fd_digits" in res.stdout
    out = sweep / "report"
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["finished", "finished", "failed", "unfinished"]
    assert all(float(r["fd_digits"]) > 0 and float(r["gflops"]) > 0 for r in rows[:2])
    assert rows[3]["model"] == "DiT-small/2"
    md = (out / "report.md").read_text()
    assert "**failed**" in md and "**unfinished**" in md and "Spearman" in md and "does not divide" in md
    for png in ("gflops_vs_fd_digits.png", "compute_vs_fd_digits.png", "hours_vs_fd_digits.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # An existing report is never replaced silently.
    again = run_cli("ditlab-report", str(sweep), cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (
        run_cli("ditlab-report", str(sweep), "--overwrite", "--metric", "digits_accuracy", cwd=tmp_path).returncode == 0
    )


def test_multi_device_ddp_inside_a_multirun_is_refused_unless_slurm_started_the_tasks(monkeypatch):
    cfg = OmegaConf.create({"trainer": {"strategy": "ddp", "devices": 2}})
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    with pytest.raises(DitlabError, match="one device per job"):
        check_sweep_strategy(cfg)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    with pytest.raises(DitlabError, match="trainer.devices=4"):
        check_sweep_strategy(cfg)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    check_sweep_strategy(cfg)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")  # slurm_4gpu with a one-device trainer: 4 copies of the run
    with pytest.raises(DitlabError, match="trainer.devices=4"):
        check_sweep_strategy(OmegaConf.create({"trainer": {"strategy": "auto", "devices": 1}}))
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE")
    for ok in (
        {"strategy": "auto", "devices": 1},
        {"strategy": "ddp_spawn", "devices": 2},
        {"strategy": "ddp", "devices": 1},
    ):
        check_sweep_strategy(OmegaConf.create({"trainer": ok}))


def test_power_law_fit_and_rank_correlation():
    compute = np.array([1e3, 1e4, 1e5, 1e6])
    fit = power_law_fit(compute, 50 * compute**-0.3)
    assert fit["b"] == pytest.approx(-0.3) and fit["a"] == pytest.approx(50) and fit["r2"] == pytest.approx(1)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([9.0, 7, 8, 1]))["rho"] == pytest.approx(-0.8)
    assert spearman(np.array([1.0, 2]), np.array([2.0, 1])) is None  # too few points to rank
