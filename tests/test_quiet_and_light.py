"""What a first run shows: counting Gflops loads no training stack, and a stop says why."""

import logging
import subprocess
import sys

HEAVY = ("lightning", "torchmetrics", "torchvision")


def test_the_flops_command_imports_no_training_stack():
    code = f"import sys, ditlab.tools.flops_cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_early_stopping_says_why_it_stopped(train_cfg, caplog):
    from ditlab.training.train import train

    cfg = train_cfg(
        "callbacks=[default,early_stopping]",
        # Epochs of 2 steps; images_seen only grows, so under mode=min it never improves: the run stops
        # after the first epoch plus `patience` (1) epochs, at step 4 of 20.
        "+trainer.limit_train_batches=2",
        "trainer.max_steps=20",
        "callbacks.early_stopping.monitor=train/images_seen",
        "callbacks.early_stopping.patience=1",
        "checkpoint.every_n_steps=100",
    )
    with caplog.at_level(logging.INFO, logger="ditlab"):
        assert train(cfg)["steps"] == 4
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("early stopping")]
    assert len(stops) == 1 and stops[0].startswith("early stopping at step 4 (train/images_seen): ")
    assert "did not improve" in stops[0]
