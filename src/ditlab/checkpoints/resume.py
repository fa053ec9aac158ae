"""Resuming a run: the checkpoint's stored config is the run's config.

Before anything is written, :func:`plan_resume` reads the checkpoint (``weights_only``, refusing a
damaged file in one line), takes its stored config, and compares it with the config composed from
the command line. Differences in what defines the run (model, block, objective, data, encoder,
seed, optimizer betas, EMA, precision, ...) are refused; the options in :data:`RESUMABLE` may
change and are applied. The run's ``config.yaml`` stays as it was; each resume appends one line
to ``resumes.jsonl`` (time, checkpoint, step, changed keys with old and new values, overrides).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ditlab.checkpoints.checkpoint_file import check_weights, extract_state_dict, read_checkpoint
from ditlab.checkpoints.stored_config import modules_named, stored_config
from ditlab.errors import DitlabError
from ditlab.run_names import RUN_SETTINGS

RESUME_LOG = "resumes.jsonl"
# Options a resume may change: the run settings that do not name a run (how long and on what
# hardware to train, logging, progress bars, checkpointing, evaluation and sampling; run_names.py),
# the learning rate / clipping (the remedy after a divergence) and init_from (a new run's start only).
RESUMABLE = (*RUN_SETTINGS, "trainer.gradient_clip_val", "optim.lr", "init_from")


# How this attempt starts, not what the run is. run_name too: its options hash follows optim.lr, so a
# resume that lowers the learning rate would otherwise record a "new name" for the same folder.
BOOKKEEPING = ("ckpt_path", "overwrite", "takeover_lock", "run_name")


@dataclass
class ResumePlan:
    ckpt_path: Path
    config: DictConfig  # the stored config with the allowed changes applied
    step: int
    changes: dict[str, list[Any]] = field(default_factory=dict)  # key -> [stored, new]
    weights: dict[str, torch.Tensor] | None = None  # the trained weights, until check_fits has seen them


def plan_resume(cfg: DictConfig, ckpt_path: Path, checkpoint: Mapping[str, Any] | None = None) -> ResumePlan:
    """``checkpoint``: the file's contents when the caller has already read and checked them."""
    ckpt = checkpoint if checkpoint is not None else read_checkpoint(ckpt_path)
    source = f"ckpt_path={ckpt_path}"
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise DitlabError(
            f"{source} holds weights only (no optimizer or loop state), so it cannot be resumed; "
            f"start a new run from its weights with init_from={ckpt_path}"
        )
    stored = stored_config(ckpt, source, trusted_modules=modules_named(cfg))
    new = OmegaConf.to_container(cfg, resolve=True)
    old = OmegaConf.to_container(stored)
    changes, refused, applied = {}, [], {}
    for key, (before, after) in _differences(old, new).items():
        if key.startswith(RESUMABLE_PREFIXES) or key in RESUMABLE:
            applied[key] = after
            if key not in BOOKKEEPING:
                changes[key] = [before, after]
        else:
            refused.append(f"{key} ({before!r} -> {after!r})")
    if refused:
        raise DitlabError(
            f"{source} continues its run with the run's own config, but the command line changes "
            f"{', '.join(refused[:4])}{' ...' if len(refused) > 4 else ''}; drop those overrides, or start a new run "
            f"from these weights (another run_name=..., init_from={ckpt_path}); a resume may change only "
            "trainer.max_steps, optim.lr, trainer.gradient_clip_val, devices, logging, checkpointing, eval and sampling"
        )
    merged = OmegaConf.merge(stored, _only_new(new, old))  # keys this ditlab has and the run's config lacks
    for key, after in applied.items():
        OmegaConf.update(merged, key, after, merge=False, force_add=True)
    weights = extract_state_dict(ckpt, use_ema=False, source=source)
    return ResumePlan(ckpt_path, merged, int(ckpt.get("global_step", 0)), changes, weights)


RESUMABLE_PREFIXES = tuple(f"{k}." for k in RESUMABLE)


def check_fits(plan: ResumePlan, model: torch.nn.Module) -> None:
    """The checkpoint's weights have the shapes of the model built from the run's config."""
    weights, plan.weights = plan.weights, None  # Lightning reads the file again to restore everything
    if weights is not None:
        check_weights(model, weights, f"ckpt_path={plan.ckpt_path}")


def record_resume(run_dir: Path, plan: ResumePlan, overrides: list[str]) -> None:
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": str(plan.ckpt_path),
        "step": plan.step,
        "changes": plan.changes,
        "overrides": overrides,
    }
    with open(run_dir / RESUME_LOG, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def _differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys present in both configs whose values differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: dict[str, tuple[Any, Any]] = {}
        for k in sorted(old.keys() & new.keys(), key=str):
            out.update(_differences(old[k], new[k], f"{prefix}{k}."))
        return out
    return {} if _same(old, new) else {prefix[:-1]: (old, new)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _only_new(new: Any, old: Any) -> dict[str, Any]:
    out = {}
    for k, v in new.items():
        if k not in old:
            out[k] = v
        elif isinstance(v, Mapping) and isinstance(old[k], Mapping):
            sub = _only_new(v, old[k])
            if sub:
                out[k] = sub
    return out
