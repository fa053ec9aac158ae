"""Run folder names that tell runs apart, and the one check that keeps them inside the runs folder.

The default ``run_name`` (conf/train.yaml) is a readable part followed by the options hash,
``${ditlab.options_hash:}``: empty when the run's config equals the default composition in every
key that defines a run, else ``_`` and 8 hex digits of a hash of those differences (the way Hydra's
``override_dirname`` or W&B run ids tell runs apart). So ``ditlab-train block.norm=rmsnorm`` gets
its own folder, the same command run again finds its own folder (``ckpt_path=last``), the order of
the overrides does not matter, and ``model=tiny`` spelled out names the default run.

Left out of the hash: the keys the readable part already names (``${seed}``, ``${model.name}``, ...)
and :data:`RUN_SETTINGS`, which say how long, where and how visibly a run trains, what it logs,
evaluates and samples, and how this attempt starts; a resume may change them too
(checkpoints/resume.py), so a resume that extends ``trainer.max_steps`` finds its run.

Imports nothing from ditlab but the error type: ``ditlab.config`` registers the resolver.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ditlab.errors import DitlabError

# Keys (and key prefixes) that do not change what a run trains.
RUN_SETTINGS = (
    "trainer.max_steps",  # the length: extended by a resume of the same run
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "data.num_workers",  # data order and augmentation do not depend on the workers (docs/runs.md)
    "logger",
    "callbacks",
    "eval",
    "checkpoint",
    "final_samples",
    "sampler",
    "guidance",
    "divergence",
    "paths",
    "run_name",
    "ckpt_path",
    "overwrite",
    "takeover_lock",
    "progress",
    "hydra",
)
HASH_DIGITS = 8  # 32 bits: a 1-in-10,000 chance of a clash among 1,000 variants of one readable name
MAX_NAME_BYTES = 200  # one folder name; the file system allows 255, a sweep prefixes "<job>_"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
_ABSENT = "<absent>"


def run_options(cfg: Any, default: Any, settings: tuple[str, ...] = RUN_SETTINGS) -> dict[str, Any]:
    """``{dotted key: value}`` of every key that defines the run and differs from ``default``
    (keys missing on one side count, with the value ``"<absent>"``). ``settings``: keys left out."""
    cfg, default = (c if isinstance(c, DictConfig) else OmegaConf.create(c) for c in (cfg, default))
    raw, raw_default = _leaves(_raw(cfg)), _leaves(_raw(default))
    named = set(_REFERENCE.findall(str(raw.get("run_name", ""))))
    out = {}
    for key in sorted(raw.keys() | raw_default.keys()):
        left_out = any(key == k or key.startswith(k + ".") for k in settings)
        if key in named or left_out or raw.get(key, _ABSENT) == raw_default.get(key, _ABSENT):
            continue
        if "run_name" in str(raw.get(key, "")):  # derived from the name: resolving it would recurse
            continue
        value, before = _resolved(cfg, key, raw), _resolved(default, key, raw_default)
        if _canonical(value) != _canonical(before):
            out[key] = _canonical(value)
    return out


def options_hash(cfg: Any, default: Any, settings: tuple[str, ...] = RUN_SETTINGS) -> str:
    """``""`` when :func:`run_options` is empty, else ``"_"`` + 8 hex digits of its canonical JSON."""
    options = run_options(cfg, default, settings)
    if not options:
        return ""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)
    return "_" + hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS]


def check_run_name(name: Any, runs_dir: str = "paths.runs_dir") -> None:
    """A run name is a folder inside the runs folder: relative, no ``..``, each part one short name."""
    text = "" if name is None else str(name)
    parts = text.split("/")
    if not text.strip():
        problem = "is empty"
    elif text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", text):
        problem = f"is an absolute path; run folders stay inside {runs_dir} (to write elsewhere set paths.runs_dir)"
    elif any(p in ("", ".", "..") for p in parts) or "\\" in text:
        problem = "must stay inside the runs folder: no '..', '.', '\\' or empty parts ('group/name' is fine)"
    elif any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        problem = f"has a part longer than {MAX_NAME_BYTES} bytes (a file system limit); choose a shorter name"
    else:
        return
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise DitlabError(f"run_name={shown} {problem}")


def _raw(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value; a list is one value."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _resolved(cfg: DictConfig, key: str, raw: dict[str, Any]) -> Any:
    if key not in raw:
        return _ABSENT
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # an interpolation that cannot resolve here: compare what was written
        return raw[key]
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _canonical(value: Any) -> Any:
    """One spelling per value: 2e-3 == 0.002 and 1 == 1.0, so equal configs hash equally."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return str(value)
