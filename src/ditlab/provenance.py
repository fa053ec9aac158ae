"""Where a result came from: the git commit of the ditlab checkout that produced it."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
