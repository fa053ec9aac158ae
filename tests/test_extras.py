"""Optional features are extras: the core install trains without them, and a missing one is named in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from conftest import FAST

from ditlab import extras
from ditlab.cli import check_launcher_extras
from ditlab.errors import DitlabError

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
OPTIONAL = (
    "wandb",
    "tensorboard",
    "matplotlib",
    "scikit-learn",
    "hydra-submitit-launcher",
    "hydra-joblib-launcher",
    "rich",
)


def _name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()


def test_core_dependencies_leave_optional_features_to_extras():
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not core & set(OPTIONAL)
    assert "scipy" in core  # used by ditlab-report
    optional = PYPROJECT["project"]["optional-dependencies"]
    for _, extra in extras.EXTRAS.values():
        assert extra in optional, f"ditlab[{extra}] is named in an error message but not declared"
    for name in ("diffusers", "torchmetrics", "torch-fidelity"):  # ditlab relies on their internals
        assert "<" in next(r for r in PYPROJECT["project"]["dependencies"] if _name(r) == name)
    assert "<" in optional["wandb"][0]


@pytest.mark.parametrize("feature", sorted(extras.EXTRAS))
def test_a_missing_package_is_named_with_its_extra(feature, monkeypatch):
    _, extra = extras.EXTRAS[feature]
    monkeypatch.setitem(extras.EXTRAS, feature, (("no_such_module_for_ditlab",), extra))
    with pytest.raises(DitlabError, match=rf"^the thing needs .* pip install 'ditlab\[{extra}\]'$"):
        extras.require(feature, "the thing")


def test_a_sweep_with_a_missing_launcher_plugin_names_the_extra(monkeypatch):
    check_launcher_extras(["experiment=cpu_scaling"])  # not a multirun: no launcher involved
    for feature in ("slurm", "local_parallel"):
        monkeypatch.setitem(extras.EXTRAS, feature, (("no_such_module_for_ditlab",), "slurm"))
    with pytest.raises(DitlabError, match=r"hydra/launcher=local_parallel needs .*ditlab\[slurm\]"):
        check_launcher_extras(["-m", "experiment=cpu_scaling"])  # the recipe picks local_parallel
    with pytest.raises(DitlabError, match=r"hydra/launcher=slurm_4gpu needs .*ditlab\[slurm\]"):
        check_launcher_extras(["--multirun", "hydra/launcher=slurm_4gpu", "model=S,B"])


def test_report_plots_without_matplotlib_name_the_extra(monkeypatch):
    from ditlab.report.plots import _pyplot

    monkeypatch.setitem(extras.EXTRAS, "report", (("no_such_module_for_ditlab",), "report"))
    with pytest.raises(DitlabError, match=r"pip install 'ditlab\[report\]'"):
        _pyplot()


def test_the_default_experiment_trains_and_samples_without_any_optional_package(tmp_path):
    """Run in an interpreter that cannot see the optional packages at all (a filtered copy of
    site-packages made of symlinks; ``-S`` skips the real one), so libraries that probe for them
    (torchmetrics probes matplotlib) take their not-installed paths too."""
    import os
    import sysconfig

    blocked = (
        "wandb",
        "tensorboard",
        "tensorboardx",
        "matplotlib",
        "sklearn",
        "scikit_learn",
        "rich",
        "hydra_plugins",
        "hydra_submitit_launcher",
        "hydra_joblib_launcher",
        "submitit",
    )
    filtered = tmp_path / "site"
    filtered.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        stem = entry.name.split("-")[0].split(".")[0].lower()
        if stem not in blocked and not entry.name.startswith("__editable__") and entry.suffix != ".pth":
            (filtered / entry.name).symlink_to(entry)
    src = Path(__file__).resolve().parents[1] / "src"
    code = textwrap.dedent(f"""
        import importlib.util, sys
        assert all(importlib.util.find_spec(m) is None for m in ("wandb", "matplotlib", "sklearn", "tensorboard"))
        from ditlab.cli import compose
        from ditlab.training.train import train
        cfg = compose("train", {[*FAST, f"paths.output_dir={tmp_path / 'run'}"]!r})
        summary = train(cfg)
        assert summary["steps"] == 4, summary
    """)
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{filtered}"}
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]


def test_the_bundled_digits_are_scikit_learns():
    import hashlib

    import numpy as np

    from ditlab.data.digits import load_digits_arrays

    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and np.bincount(labels).tolist() == [
        178,
        182,
        177,
        183,
        181,
        182,
        181,
        179,
        174,
        180,
    ]
    digest = hashlib.sha256(images.astype(np.uint8).tobytes() + labels.astype(np.uint8).tobytes()).hexdigest()
    assert digest == "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return  # the digest above is what scikit-learn's load_digits() gives (checked where it is installed)
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)
