"""One command-line style: every command takes key=value; the old --flag/positional spellings of
ditlab-report, ditlab-classify and ditlab-eval still work with a one-line note; ``ditlab <command>``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ditlab.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


class Called(Exception):
    """Raised by a stand-in for the command's work: carries what the command line was parsed into."""


def parsed(monkeypatch, capsys, module, function: str, main, argv: list[str]):
    def record(*args, **kwargs):
        raise Called(args, kwargs)

    monkeypatch.setattr(module, function, record)
    with pytest.raises(Called) as e:
        main(argv)
    return e.value.args, capsys.readouterr().err


def test_report_reads_key_value_and_the_old_spelling_alike(monkeypatch, capsys):
    from ditlab.report import cli

    new, note = parsed(
        monkeypatch, capsys, cli, "build_report", cli.main, ["sweep=runs/x", "metric=fid", "budget=1e3", "holdout=2"]
    )
    assert note == ""
    old, note = parsed(
        monkeypatch,
        capsys,
        cli,
        "build_report",
        cli.main,
        ["runs/x", "--metric", "fid", "--budget", "1e3", "--holdout=2"],
    )
    assert old == new and Path("runs/x") in new[0] and 1e3 in new[0] and 2 in new[0]
    assert note.count("\n") == 1 and "old spelling" in note
    assert "ditlab-report sweep=runs/x metric=fid holdout=2 budget=1000.0" in note
    mixed, _ = parsed(
        monkeypatch, capsys, cli, "build_report", cli.main, ["runs/x", "metric=fid", "budget=1e3", "--holdout", "2"]
    )
    assert mixed == new
    switch, _ = parsed(monkeypatch, capsys, cli, "build_report", cli.main, ["dir=runs/x", "overwrite=true"])
    assert True in switch[0]


def test_an_unknown_key_is_one_line_naming_the_options(capsys):
    from ditlab.report.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sweep=runs/x", "metrc=fid"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "no option 'metrc'" in err and "sweep" in err and "metric" in err and "budget" in err


def test_classify_reads_key_value_and_the_old_spelling_alike(monkeypatch, capsys):
    from ditlab.metrics import digits_classifier as dc

    new, note = parsed(monkeypatch, capsys, dc, "classify_npz", dc.main, ["samples=runs/r", "cache_dir=/tmp/c"])
    old, old_note = parsed(monkeypatch, capsys, dc, "classify_npz", dc.main, ["runs/r", "--cache-dir", "/tmp/c"])
    assert new == old == (("runs/r", "/tmp/c"), {}) and note == ""
    assert "write: ditlab-classify samples=runs/r cache_dir=/tmp/c" in old_note


def test_eval_takes_samples_as_a_key_and_notes_the_positional(tmp_path, capsys):
    from ditlab.tools.evaluate import main

    for argv, noted in (
        ([f"samples={tmp_path}/x.npz", "ref=r.npz"], False),
        ([f"{tmp_path}/x.npz", "ref=r.npz"], True),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert "x.npz not found" in err and ("old spelling" in err) == noted


def test_the_ditlab_command_lists_and_runs_the_eight_commands():
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    scripts = dict(re.findall(r'^([\w-]+) = "([^"]+)"', section, flags=re.M))  # tomllib is 3.11+
    assert {f"ditlab-{name}": target for name, (target, _) in COMMANDS.items()} == {
        k: v for k, v in scripts.items() if k != "ditlab"
    }
    assert scripts["ditlab"] == "ditlab.commands:main" and len(COMMANDS) == 8
    exe = Path(sys.executable).parent / "ditlab"
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(f"\n  {name} " in help_text for name in COMMANDS)
    flops = subprocess.run([exe, "flops", "model=S", "model.patch_size=8"], capture_output=True, text=True)
    assert flops.returncode == 0 and "DiT-S/8" in flops.stdout, flops.stderr
    wrong = subprocess.run([exe, "trian"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown command 'trian'" in wrong.stderr
