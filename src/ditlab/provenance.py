"""Where a result came from: the git commit of the ditlab checkout and the versions of the packages
whose arithmetic it depends on."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

# Packages that change a run's numbers when their version changes (kernels, image decoding and
# resizing, schedulers, metric features), beside torch itself. Two runs with the same config, seed and
# commit are bitwise equal on one machine only with these equal too.
NUMERIC_PACKAGES = (
    "torch",
    "numpy",
    "pillow",
    "torchvision",
    "lightning",
    "diffusers",
    "torchmetrics",
    "torch-fidelity",
    "scipy",
    "hydra-core",
    "omegaconf",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each of ``NUMERIC_PACKAGES`` (None for one that is not installed)."""
    versions: dict[str, str | None] = {}
    for name in NUMERIC_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """``<sha>`` of the checkout ditlab runs from, ``<sha>-dirty`` with uncommitted changes to tracked
    files, None when ditlab is not a git checkout (an installed wheel)."""
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - no git, or not a checkout
        return None
