"""wandb: offline runs hold Gflops and the metric in their summary; modes from config or environment."""

import json

import pytest
from test_eval_callback import EVAL

from ditlab.errors import DitlabError
from ditlab.training.train import train
from ditlab.training.wandb_logger import resolve_mode
from ditlab.training.wandb_offline import offline_run_files, read_offline_run


def test_offline_run_summary_holds_gflops_and_the_metric(train_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no key needed
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    summary = train(train_cfg("logger=wandb", *EVAL))
    run = tmp_path / "run"
    files = offline_run_files(run)
    assert len(files) == 1  # one wandb run, finished (a second train() would start another)
    logged = read_offline_run(files[0])
    assert logged["complete"]  # finished and on disk when train() returns
    s = logged["summary"]
    assert s["model/gflops"] == summary["gflops"] and s["model/params"] == summary["params"]
    assert s["model/tokens"] == summary["tokens"]
    assert s["eval/fd_digits"] == pytest.approx(summary["metrics"]["fd_digits"])
    assert s["eval/digits_accuracy"] == pytest.approx(summary["metrics"]["digits_accuracy"])
    assert s["train_compute_gflops"] == pytest.approx(summary["train_compute_gflops"])
    assert s["status"] == "finished" and s["eval/recipe"]["nfe"] == summary["metrics_recipe"]["nfe"]
    assert "train/loss" in logged["history"] and "eval/samples/filenames" in s  # losses and the grid
    assert logged["config"]["model"]["hidden_size"] == 32  # the resolved config
    assert set(logged["run"]["tags"]) >= {"size:tiny", "patch:4", "block:adaln_zero"}
    assert (run / "wandb_run_id.txt").read_text().strip() == files[0].stem.split("-", 1)[1]
    assert json.loads((run / "summary.json").read_text())["gflops"] == summary["gflops"]


def test_disabled_mode_writes_nothing(train_cfg, tmp_path):
    train(train_cfg("logger=wandb", "logger.wandb.mode=disabled"))
    assert offline_run_files(tmp_path / "run") == []


def test_mode_comes_from_config_then_environment(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == "offline" and resolve_mode("disabled") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode(None) == "online"
    with pytest.raises(DitlabError, match="logger.wandb.mode"):
        resolve_mode("sometimes")
