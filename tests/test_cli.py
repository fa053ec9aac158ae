"""The console scripts as a user runs them: exit codes, one-line errors, the composed config, DDP."""

import json

import numpy as np
from conftest import FAST, run_cli


def test_cfg_job_prints_the_composed_config(tmp_path):
    res = run_cli("ditlab-train", "--cfg", "job", "model=XL", "model.patch_size=2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "hidden_size: 1152" in res.stdout and "patch_size: 2" in res.stdout and "depth: 28" in res.stdout


def test_misspelled_key_fails_before_any_work_with_hydras_message(tmp_path):
    res = run_cli("ditlab-train", "trainer.max_step=5", cwd=tmp_path)
    assert res.returncode != 0
    assert "max_step" in res.stderr and "not in struct" in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_unknown_group_option_lists_the_available_ones(tmp_path):
    res = run_cli("ditlab-train", "block=nope", cwd=tmp_path)
    assert res.returncode != 0
    assert "block/nope" in res.stderr and "adaln_zero" in res.stderr


def test_ditlab_errors_are_one_line_with_exit_status_2(tmp_path):
    res = run_cli("ditlab-train", *FAST, "model.patch_size=3", cwd=tmp_path)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ditlab: error: patch size 3 does not divide")
    assert "Traceback" not in res.stderr


def test_two_process_cpu_ddp_trains_the_default_experiment(tmp_path):
    res = run_cli("ditlab-train", *FAST, "trainer=ddp_cpu", "run_name=ddp", "data.batch_size=32", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["images_seen"] == 4 * 32
    with np.load(run / "samples.npz") as f:
        assert f["arr_0"].shape == (20, 8, 8, 1)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "runs" / "multirun").exists()
