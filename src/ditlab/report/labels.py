"""Words and numbers that ditlab-report's titles, legends and tables show: the name of what was run
(the experiment recipe, not the sweep's launch time) and power-law terms that stay readable when the
exponent is about zero."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

FLAT_EXPONENT = 5e-4  # |b| below this prints as flat: x^-0.000 says nothing
LAUNCH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[_T]\d{2}[-:]\d{2}([-:]\d{2})?")  # Hydra's sweep folder names


def power_term(a: float, b: float, x: str = "x") -> str:
    """``a · x^b``; ``a (flat: |b| < 5e-4)`` for an exponent that rounds to zero, and four decimals
    below 0.01, so a small but real exponent is not printed as 0.000."""
    if abs(b) < FLAT_EXPONENT:
        return f"{a:.4g} (flat: |b| < {FLAT_EXPONENT:g})"
    return f"{a:.4g} · {x}^{b:.4f}" if abs(b) < 0.01 else f"{a:.4g} · {x}^{b:.3f}"


def interval_text(ci: Any, digits: int = 4) -> str:
    """``[lo, hi]`` of an interval (``digits`` significant digits), or ``(no interval)`` when there is none."""
    return f"[{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]" if ci else "(no interval)"


def experiment_name(root: Path, runs: list[Any]) -> str:
    """What the report's titles call the runs under ``root``: the ``experiment=`` recipe every run was
    launched with; else the options swept between the runs (``model x model.patch_size``); else the
    folder name (with its parent when the folder is only a launch time)."""
    overrides = [_overrides(run.path) for run in runs]
    recipes = {o.get("experiment") for o in overrides}
    if len(recipes) == 1 and None not in recipes:
        return str(recipes.pop())
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    swept = [k for k in keys if len({o.get(k) for o in overrides}) > 1 and not k.startswith("hydra")]
    if len(runs) > 1 and swept:
        return " x ".join(swept)
    root = Path(root).resolve()
    return f"{root.parent.name}/{root.name}" if LAUNCH_TIME.fullmatch(root.name) else root.name


def _overrides(run_dir: Path) -> dict[str, str]:
    """``key -> value`` of a run's command-line overrides (``overrides.txt``, written by every run)."""
    path = Path(run_dir) / "overrides.txt"
    words = path.read_text().split() if path.is_file() else []
    return dict(w.lstrip("+~").split("=", 1) for w in words if "=" in w)
