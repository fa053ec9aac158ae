"""What a first run shows: counting Gflops loads no training stack, and no noise in its logs (an early
stop's line is checked in test_loggers_callbacks)."""

import logging
import os
import subprocess
import sys

from conftest import FAST, run_cli

HEAVY = ("lightning", "torchmetrics", "torchvision")


def test_the_flops_command_imports_no_training_stack():
    code = f"import sys, ditlab.tools.flops_cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# A tiny run (conftest.FAST, as command-line overrides).
TINY = [*FAST, "trainer.enable_progress_bar=true"]
NOISE = (
    "srun` command is available",
    "anonymous setting has no effect",
    "building the font cache",
    "generated new fontManager",
    "GPU available",
    "TPU available",
    "💡",
    "litlogger",
    "\r",
    "\x1b[A",
)


def noise_in(text: str) -> list[str]:
    return [n for n in NOISE if n in text]


def test_a_run_prints_no_start_up_noise_from_the_console_or_python(tmp_path):
    fake_bin = tmp_path / "bin"  # Slurm installed (or not): Lightning sees an srun either way
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "MPLCONFIGDIR": str(tmp_path / "mpl"), "WANDB_SILENT": "false"}
    res = run_cli(
        "ditlab-train",
        *TINY,
        "logger=[csv,wandb]",
        "logger.wandb.mode=offline",
        f"paths.runs_dir={tmp_path}/runs",
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    cli_log = next((tmp_path / "runs").rglob("cli.log")).read_text()
    assert "run finished" in cli_log and not noise_in(cli_log), cli_log
    assert not noise_in(res.stderr.replace("\r", "")), res.stderr  # (the live bar on stderr may redraw)
    # From Python, with logging unconfigured: ditlab's own lines show, Lightning's tips do not.
    code = (
        "import sys; from ditlab.config import compose; from ditlab.training.train import train; "
        "train(compose('train', sys.argv[1:]))"
    )
    api = subprocess.run(
        [sys.executable, "-c", code, *FAST, f"paths.output_dir={tmp_path}/api_run"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "DITLAB_CACHE": str(tmp_path / "cache")},
        timeout=600,
        cwd=tmp_path,
    )
    assert api.returncode == 0, api.stderr
    assert "[ditlab][INFO] - run finished" in api.stderr and not noise_in(api.stderr), api.stderr


def test_the_filters_hold_only_inside_a_run(caplog, monkeypatch):
    import lightning  # noqa: F401  (its package logger's own console handler is what doubled the lines)

    from ditlab.training.quiet import quiet_run

    fonts = logging.getLogger("matplotlib.font_manager")
    # A console script's process drops the font-cache lines for good (quiet_font_cache); an in-process
    # command earlier in this test session may have done so here.
    monkeypatch.setattr(fonts, "filters", [])
    distributed = logging.getLogger("lightning.fabric.utilities.distributed")
    lightning_handlers = list(logging.getLogger("lightning").handlers)
    assert lightning_handlers  # Lightning's console handler, added when lightning is imported
    with caplog.at_level(logging.INFO):  # caplog: a handler on the root logger, as Hydra's
        with quiet_run():
            fonts.warning("Matplotlib is building the font cache; this may take a moment.")
            distributed.info("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2")
            distributed.info("Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2")  # once, from rank 0
            # ...and not a second time through Lightning's own handler: the root logger has one
            assert logging.getLogger("lightning").handlers == []
        fonts.warning("Matplotlib is building the font cache; this may take a moment.")
    assert [r.getMessage()[:30] for r in caplog.records] == [
        "Initializing distributed: GLOB",
        "Matplotlib is building the fon",
    ]
    assert logging.getLogger("lightning").handlers == lightning_handlers  # outside a run: as before


def test_bars_in_a_log_file_are_plain_lines(monkeypatch):
    import io

    from ditlab import progress

    log_file = io.StringIO()  # what Slurm's output or launcher.log is to a bar: not a terminal
    monkeypatch.setattr(sys, "stderr", log_file)
    with progress.bar(total=3, desc="final samples", unit="img") as outer:
        with progress.bar(total=2, desc="inner", position=1, leave=False) as inner:
            inner.update(2)
        outer.update(3)
    text = log_file.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines()[-1].startswith("final samples: 100%|") and "3/3" in text
