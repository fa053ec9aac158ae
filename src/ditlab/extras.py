"""Optional features and the pip extra that provides each.

The core install trains, samples and evaluates; dashboards, SLURM launching and report plots need
extra packages. A feature whose package is missing stops with one line naming the extra.
"""

from __future__ import annotations

import importlib.util

from ditlab.errors import DitlabError

# feature -> (importable modules, any one suffices; the extra that installs them)
EXTRAS = {
    "wandb": (("wandb",), "wandb"),
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "slurm": (("hydra_plugins.hydra_submitit_launcher",), "slurm"),
    "local_parallel": (("hydra_plugins.hydra_joblib_launcher",), "slurm"),
    "report": (("matplotlib",), "report"),
    "rich": (("rich",), "rich"),
}


def available(feature: str) -> bool:
    modules, _ = EXTRAS[feature]
    return any(_found(m) for m in modules)


def require(feature: str, what: str) -> None:
    """Raise one line naming the extra when ``feature``'s package is missing; ``what`` is what needs it."""
    if not available(feature):
        modules, extra = EXTRAS[feature]
        raise DitlabError(f"{what} needs the '{modules[0].split('.')[-1]}' package: pip install 'ditlab[{extra}]'")


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
