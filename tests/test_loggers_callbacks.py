"""Several loggers at once, loggers added from outside the package, the callbacks group, scoped warnings."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
import textwrap

import pytest
from conftest import compose_train

from ditlab.errors import DitlabError
from ditlab.training.callbacks import build_callbacks
from ditlab.training.loggers import build_loggers

PLUGIN = '''
import json
from pathlib import Path

from lightning.pytorch.loggers import Logger

from ditlab.training.loggers import LOGGERS


class JsonLinesLogger(Logger):
    """Appends every logged dict to <run>/<file>."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    name = "jsonl"
    version = 0

    def log_metrics(self, metrics, step=None):
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\\n")

    def log_hyperparams(self, params, *args, **kwargs):
        pass


@LOGGERS.register("jsonl")
def build(cfg, run_dir, full_cfg):
    return JsonLinesLogger(run_dir / cfg.file)
'''


def _plugin_conf(tmp_path):
    (tmp_path / "my_loggers.py").write_text(PLUGIN)
    conf = tmp_path / "my_conf" / "logger"
    conf.mkdir(parents=True)
    (conf / "jsonl.yaml").write_text("# @package logger.jsonl\nname: jsonl\nmodule: my_loggers\nfile: metrics.jsonl\n")
    # A ready-made Lightning logger needs no Python at all: _target_ and its arguments.
    (conf / "plain_csv.yaml").write_text(
        "# @package logger.plain_csv\n_target_: lightning.pytorch.loggers.CSVLogger\n"
        "save_dir: ${paths.output_dir}\nname: plain_csv\n"
    )
    return tmp_path / "my_conf"


def test_several_loggers_plugins_and_early_stopping_in_one_run(tmp_path, monkeypatch, caplog):
    from ditlab.training.train import train

    monkeypatch.syspath_prepend(str(tmp_path))
    conf = _plugin_conf(tmp_path)
    run = tmp_path / "run"
    cfg = compose_train(
        f"hydra.searchpath=[file://{conf}]",
        "logger=[csv,tensorboard,jsonl,plain_csv]",
        "callbacks=[default,early_stopping]",
        # Epochs of 2 steps; images_seen only grows, so under mode=min it never improves: stop after
        # the first epoch plus `patience` (1) epochs, i.e. at step 4 of 20.
        "+trainer.limit_train_batches=2",
        "trainer.max_steps=20",
        "callbacks.early_stopping.monitor=train/images_seen",
        "callbacks.early_stopping.patience=1",
        "checkpoint.every_n_steps=100",
        output_dir=run,
    )
    with caplog.at_level(logging.INFO, logger="ditlab"):
        summary = train(cfg)
    assert summary["steps"] == 4
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("early stopping")]
    assert len(stops) == 1 and stops[0].startswith("early stopping at step 4 (train/images_seen): ")  # says why
    assert "did not improve" in stops[0]

    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("train/loss") for r in rows)
    assert any(r.get("lr-AdamW") for r in rows), "the LR monitor (callbacks default) logs to every logger"
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in x for x in lines), "the registered plugin logger got the same metrics"
    assert list((run / "plain_csv").rglob("metrics.csv")), "the _target_ logger wrote its own files"
    assert (run / "curves.png").stat().st_size > 1000


def test_curves_show_the_loss_and_every_eval_metric(tmp_path):
    from ditlab.training.curves import write_curves

    (tmp_path / "metrics.csv").write_text("step,train/loss,train/mse\n0,1.5,1.0\n1,,\n2,0.9,0.7\n")
    (tmp_path / "eval").mkdir()
    rows = [
        {
            "step": s,
            "images_seen": 8 * s,
            "final": s == 4,
            "fd_digits": fd,
            "digits_accuracy": acc,
            "recipe": {"nfe": 4},
        }
        for s, fd, acc in ((2, 50.0, 0.5), (4, 20.0, 0.9))
    ]
    (tmp_path / "eval" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert write_curves(tmp_path, images_per_step=8) == ["train/loss", "eval/fd_digits", "eval/digits_accuracy"]
    from PIL import Image

    assert Image.open(tmp_path / "curves.png").size == (1260, 320)  # three panels side by side
    assert write_curves(tmp_path / "empty", images_per_step=8) == []


def test_progress_off_and_no_logger_leave_out_the_callbacks_that_cannot_work():
    from lightning.pytorch.callbacks import LearningRateMonitor

    from ditlab.training.progress_bar import StepProgressBar
    from ditlab.training.throughput import TrainingThroughput

    cfg = compose_train(fast=False).callbacks
    kinds = lambda cbs: sorted(type(c).__name__ for c in cbs)  # noqa: E731
    assert kinds(build_callbacks(cfg, progress=True, has_logger=True)) == [
        "LearningRateMonitor",
        "StepProgressBar",
        "TrainingThroughput",
    ]
    # throughput stays without a logger: it also writes summary.json
    assert [type(c) for c in build_callbacks(cfg, progress=False, has_logger=True)] == [
        LearningRateMonitor,
        TrainingThroughput,
    ]
    assert [type(c) for c in build_callbacks(cfg, progress=True, has_logger=False)] == [
        StepProgressBar,
        TrainingThroughput,
    ]
    assert build_callbacks(compose_train("callbacks=none").callbacks, progress=True, has_logger=True) == []
    assert compose_train("progress=false").progress is False


def test_rich_bar_replaces_tqdm_or_names_its_extra():
    from ditlab.extras import available

    cfg = compose_train("callbacks=[default,rich_progress_bar]").callbacks
    assert list(cfg) == ["progress_bar", "lr_monitor", "throughput"]  # same key: rich's bar replaces tqdm's
    if available("rich"):
        from lightning.pytorch.callbacks import RichProgressBar

        assert any(isinstance(c, RichProgressBar) for c in build_callbacks(cfg, progress=True, has_logger=True))
    else:
        with pytest.raises(DitlabError, match=r"pip install 'ditlab\[rich\]'"):
            build_callbacks(cfg, progress=True, has_logger=True)


def test_a_missing_optional_package_fails_with_one_line_naming_the_extra(tmp_path, monkeypatch):
    from ditlab import extras

    for feature in ("wandb", "tensorboard"):
        monkeypatch.setitem(extras.EXTRAS, feature, (("no_such_module_for_ditlab",), feature))
        cfg = compose_train(f"logger={feature}")
        with pytest.raises(DitlabError, match=rf"logger={feature} needs .* pip install 'ditlab\[{feature}\]'"):
            build_loggers(cfg.logger, tmp_path, cfg)


def test_importing_ditlab_installs_no_warning_filters():
    code = textwrap.dedent("""
        import warnings
        import lightning.pytorch, torchmetrics, diffusers, hydra  # the libraries install their own filters
        before = list(warnings.filters)
        import ditlab.training.train, ditlab.tools.sample, ditlab.metrics.suite, ditlab.cli, ditlab.report.cli
        import ditlab.cache.extract, ditlab.tools.bench_latent_cache
        added = [f for f in warnings.filters if f not in before]
        assert not added, added
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
