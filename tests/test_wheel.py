"""A built wheel works without the checkout: configs inside the package, console scripts from any cwd.

The wheel is built from a copy of the source (nothing is written into the checkout), installed
non-editable into a fresh venv that borrows the already installed dependencies through a ``.pth``
file (offline, seconds), and then trains, samples and reports from a directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import FAST

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd[:3]} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def _copy_source(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    shutil.copytree(REPO / "conf", dst / "conf", ignore=ignore)
    shutil.copytree(REPO / "src", dst / "src", symlinks=True, ignore=ignore)  # keeps the conf symlink


def test_wheel_trains_samples_and_reports_outside_the_checkout(tmp_path):
    src, wheels, venv, work = (tmp_path / d for d in ("src", "wheels", "venv", "work"))
    for d in (src, work):
        d.mkdir()
    _copy_source(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(DITLAB_ROOT=str(work), DITLAB_CACHE=str(work / "cache"), WANDB_MODE="disabled")

    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            wheels,
            src,
        ],
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = wheels.glob("ditlab-*.whl")
    shipped = {n.split("ditlab/conf/", 1)[1] for n in zipfile.ZipFile(wheel).namelist() if "ditlab/conf/" in n}
    expected = {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and expected <= shipped, f"configs missing from the wheel: {sorted(expected - shipped)[:5]}"

    # Fresh venv, ditlab from the wheel only; torch, lightning, ... from this interpreter's site-packages.
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib.stdout.strip(), "borrowed_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        cwd=tmp_path,
        env=env,
    )
    where = _run([python, "-c", "import ditlab; print(ditlab.__file__)"], work, env).stdout.strip()
    assert where.startswith(str(venv)), f"ditlab imported from {where}, not from the installed wheel"
    # The torchrun launcher plugin ships in the hydra_plugins namespace (no hydra_plugins/__init__.py,
    # which would hide every other installed Hydra plugin) and Hydra discovers it from the wheel.
    names = zipfile.ZipFile(wheel).namelist()
    assert "hydra_plugins/ditlab_torchrun/torchrun_launcher.py" in names and "hydra_plugins/__init__.py" not in names
    found = _run(
        [
            python,
            "-c",
            "from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
            "import hydra_plugins.ditlab_torchrun as p; print(p.__file__); "
            "print(' '.join(c.__name__ for c in Plugins.instance().discover(Launcher)))",
        ],
        work,
        env,
    ).stdout.split()
    assert found[0].startswith(str(venv)) and "TorchrunLauncher" in found[1:] and "JoblibLauncher" in found[1:]

    bin_ = venv / "bin"
    _run(
        [bin_ / "ditlab-train", *FAST, "run_name=wheel", "trainer.max_steps=2", "checkpoint.every_n_steps=2"],
        cwd=work,
        env=env,
    )
    run = work / "runs" / "wheel"
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    _run(
        [
            bin_ / "ditlab-sample",
            f"ckpt={run}",
            "num_samples=4",
            "batch_size=4",
            "sampler=ddim",
            "sampler.steps=2",
            f"out={work / 'samples'}",
        ],
        cwd=work,
        env=env,
    )
    assert (work / "samples" / "samples.npz").is_file() and (work / "samples" / "grid.png").is_file()
    _run([bin_ / "ditlab-report", work / "runs", "--out", work / "report"], cwd=work, env=env)
    assert (work / "report" / "report.csv").is_file()
