"""Shared fixtures: compose the real configs (Hydra compose API) shrunk to CPU-test size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ditlab.config import compose

# A few-second version of the default experiment: same code path, smaller numbers.
FAST = [
    "model.depth=1",
    "model.hidden_size=32",
    "model.num_heads=2",
    "data.resolution=8",
    "model.patch_size=4",
    "data.batch_size=16",
    "trainer.max_steps=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "checkpoint.every_n_steps=2",
    "sampler.steps=4",
    "final_samples.num_samples=20",
    "final_samples.batch_size=20",
    "final_samples.grid_columns=2",
    "eval.metrics=[]",  # sample-quality metrics off (tests that need them turn them on)
]


def compose_train(*overrides: str, output_dir: Path | None = None, fast: bool = True):
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else ["paths.output_dir=unused"]
    return compose("train", [*(FAST if fast else []), *extra, *overrides])


@pytest.fixture
def train_cfg(tmp_path):
    """``train_cfg(*overrides)`` -> a composed fast config writing into tmp_path/run."""

    def _make(*overrides: str, run: str = "run"):
        return compose_train(*overrides, output_dir=tmp_path / run)

    return _make


def randomize_weights(module, std: float, only_zero: bool = False) -> None:
    """Draw trainable tensors from N(0, std²) (with ``only_zero``: just the zero-initialised ones), so no
    zero-init hides a wrong weight mapping or a skipped code path. Uses the global torch RNG."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad and not (only_zero and p.any()):
                p.normal_(std=std)


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a console script of this venv as a user would."""
    exe = Path(sys.executable).parent / args[0]
    full_env = {**os.environ, "DITLAB_ROOT": str(cwd), "DITLAB_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
