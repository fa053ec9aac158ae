"""The multi-process parts of ``python -m ditlab.tools.gpu_check``: 2-step DDP and FSDP runs through
``ditlab-train`` (separate processes: Lightning's DDP launcher re-runs the command line for the other
ranks), with the EMA checked in the checkpoints they write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ditlab.errors import DitlabError

# Overrides that keep a check run to its training: no evaluation, one tiny final sample.
QUIET = [
    "eval=none",
    "final_samples.num_samples=1",
    "final_samples.batch_size=1",
    "sampler.steps=2",
    "trainer.enable_progress_bar=false",
    "overwrite=true",
]


def _train_cli(overrides: list[str], cwd: Path) -> None:
    # A separate process: Lightning's DDP launcher re-runs the command line for the other ranks.
    exe = Path(sys.executable).with_name("ditlab-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from ditlab.cli import train_main; train_main()"]
    proc = subprocess.run(
        [*cmd, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    if proc.returncode != 0:
        raise DitlabError(f"gpu_check: ditlab-train {' '.join(overrides)} failed: {proc.stderr.strip()[-500:]}")


def _ema_check(ckpt_path: Path) -> dict[str, Any]:
    state = torch.load(ckpt_path, weights_only=True, map_location="cpu")["state_dict"]
    model = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    same_keys = set(model) == set(ema) and all(model[k].shape == ema[k].shape for k in model)
    finite = all(torch.isfinite(v).all() for v in ema.values())
    moved = sum(not torch.equal(model[k], ema[k]) for k in model if k in ema)
    return {
        "ema_keys_match_model": same_keys,
        "ema_finite": bool(finite),
        "ema_tensors_differing_from_model": moved,
        "intact": bool(same_keys and finite and moved > 0),
    }


def _smoke_overrides(run: Path, steps: int) -> list[str]:
    return [
        "model.depth=2",
        "model.hidden_size=64",
        "model.num_heads=2",
        "data.batch_size=32",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "checkpoint.every_n_steps=2",
        *QUIET,
        f"hydra.run.dir={run}",
        f"paths.output_dir={run}",
    ]


def ddp_smoke(args, tmp: Path, done: dict) -> dict[str, Any]:
    gpus = torch.cuda.device_count()
    trainer = ["trainer=ddp", f"trainer.devices={gpus}"] if gpus else ["trainer=ddp_cpu"]
    run = tmp / "run"
    tmp.mkdir(parents=True, exist_ok=True)
    _train_cli([*trainer, *_smoke_overrides(run, 2)], cwd=tmp)
    return {"trainer": trainer, **_ema_check(run / "checkpoints" / "last.ckpt")}


def fsdp_smoke(args, tmp: Path, done: dict) -> dict[str, Any]:
    gpus = torch.cuda.device_count()
    trainer = ["trainer=fsdp", f"trainer.devices={gpus}"]
    tmp.mkdir(parents=True, exist_ok=True)
    _train_cli([*trainer, *_smoke_overrides(tmp / "resumed", 2)], cwd=tmp)
    first = _ema_check(tmp / "resumed" / "checkpoints" / "last.ckpt")
    _train_cli([*trainer, *_smoke_overrides(tmp / "resumed", 4), "ckpt_path=last"], cwd=tmp)
    _train_cli([*trainer, *_smoke_overrides(tmp / "straight", 4)], cwd=tmp)
    a = torch.load(tmp / "resumed" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    b = torch.load(tmp / "straight" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    ema_diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if k.startswith("ema."))
    return {
        "trainer": trainer,
        "after_2_steps": first,
        "resumed_vs_straight_ema_max_abs_diff": ema_diff,
        "resume_matches": ema_diff < 1e-5,
    }
