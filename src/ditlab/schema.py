"""The types and ranges of the config keys a user sets, checked once when a tool's config is composed.

Hydra composes YAML without types, so ``trainer.max_steps=abc`` or ``data.num_workers=-1`` would
otherwise travel into Lightning, torch or a data loader and come back as a traceback, or be
accepted silently (``model.class_dropout_prob=2``). Every console script composes through
:func:`ditlab.cli._hydra_entry` (``ditlab-eval`` through :func:`ditlab.config.compose`), and both
call :func:`check_config`: one table per config, one message shape, before anything is written.

A key the table does not list is not checked here (a group's own builder refuses unknown options);
a key whose group is not chosen (``model`` in the paper-grid ``ditlab-flops``) is skipped.
docs/configs.md ("Bad input") lists what is checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ditlab.errors import DitlabError

_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """``accepts(value)`` says whether a value is valid; ``wants`` says what is (the message's fix)."""

    accepts: Callable[[Any], bool]
    wants: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None, null: bool = False, extra: str = "") -> Rule:
    bounds = " and ".join(s for s in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if s)
    wants = f"an integer{' ' + bounds if bounds else ''}{' or null' if null else ''}{extra}"
    return Rule(
        lambda v: (null and v is None) or (_is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)),
        wants,
    )


def number(lo: float | None = None, hi: float | None = None, hi_open: bool = False, null: bool = False) -> Rule:
    upper = f"< {hi:g}" if hi_open else f"<= {hi:g}" if hi is not None else ""
    bounds = " and ".join(s for s in (f">= {lo:g}" if lo is not None else "", upper) if s)
    wants = f"a number{' ' + bounds if bounds else ''}{' or null' if null else ''}"

    def accepts(v: Any) -> bool:
        if null and v is None:
            return True
        if not _is_number(v) or (lo is not None and v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)

    return Rule(accepts, wants)


def choice(*values: Any) -> Rule:
    return Rule(lambda v: v in values and not isinstance(v, bool), "one of " + " | ".join(str(x) for x in values))


BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
SEED = integer(0, 2**32 - 1)
COUNT = integer(1)
POSITIVE = Rule(lambda v: _is_number(v) and v > 0, "a number > 0")
# Lightning's precision names (lightning/fabric/connector.py _PRECISION_INPUT), without importing it.
LIGHTNING_PRECISIONS = (
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "64-true",
    "bf16-true",
    "16-true",
    "32",
    "16",
    "bf16",
    "64",
)
# Lightning: -1 (all), a positive count, "auto", or the ids "0,1" / [0, 1]; 0 devices is refused late.
DEVICES = Rule(
    lambda v: (
        (_is_int(v) and (v == -1 or v > 0))
        or v == "auto"
        or (
            isinstance(v, str) and v.replace(",", " ").split() and all(p.isdigit() for p in v.replace(",", " ").split())
        )
        or (isinstance(v, list) and v and all(_is_int(d) and d >= 0 for d in v))
    ),
    "a positive number of devices, -1 (all), auto, or device ids like [0,1]",
)
INTERVAL = Rule(
    lambda v: (
        v is None
        or (isinstance(v, list) and len(v) == 2 and all(_is_number(x) and 0 <= x <= 1 for x in v) and v[0] <= v[1])
    ),
    "null or [lo, hi] with 0 <= lo <= hi <= 1 (noise levels)",
)
LABELS = Rule(
    lambda v: v is None or (isinstance(v, list) and v and all(_is_int(x) and x >= 0 for x in v)),
    "null (class-balanced) or a non-empty list of class ids like [1,2]",
)
INT_LIST = Rule(
    lambda v: isinstance(v, list) and v and all(_is_int(x) and x >= 1 for x in v), "a list of integers >= 1"
)

GUIDANCE = {
    # Classifier-free guidance: 1 = off, 0 = the unconditional model alone; a negative scale would
    # push samples away from their class, which no DiT recipe uses, so it is taken for a typo.
    "scale": number(0),
    "channels": choice("all", "first3"),
    "interval": INTERVAL,
}
MODEL = {
    "patch_size": COUNT,
    "depth": COUNT,
    "hidden_size": COUNT,
    "num_heads": COUNT,
    "mlp_ratio": POSITIVE,
    "class_dropout_prob": number(0, 1, hi_open=True),  # the share of labels dropped for CFG training
    "grad_checkpointing": BOOL,
    "compile": BOOL,
}
DATA = {
    "resolution": integer(1, null=True),  # null: a latent cache's own resolution
    "batch_size": COUNT,
    "num_workers": integer(0),
    "random_flip": BOOL,
    "skip_corrupt": BOOL,
    "num_classes": integer(0, null=True),
}
TRAINER = {
    "devices": DEVICES,
    "num_nodes": COUNT,
    "precision": choice(*LIGHTNING_PRECISIONS),
    "max_steps": COUNT,
    "log_every_n_steps": COUNT,
    "gradient_clip_val": number(0, null=True),  # null or 0: no clipping
    "accumulate_grad_batches": COUNT,
    "enable_progress_bar": BOOL,
    "enable_model_summary": BOOL,
    "num_sanity_val_steps": integer(0),
}
EVAL = {
    "every_n_steps": integer(0),
    "final": BOOL,
    "num_samples": COUNT,
    "batch_size": COUNT,
    "seed": SEED,
    "precision": choice("fp32", "bf16", "fp16"),
    "real_count": integer(1, null=True),
    "kid_subsets": COUNT,
    "kid_subset_size": COUNT,
    "is_split_size": COUNT,
    "pr_k": COUNT,
    "grid_per_class": COUNT,
    "grid_upscale": COUNT,
    "antialias": BOOL,
    "guidance_scale": GUIDANCE["scale"],  # ${guidance.scale} unless set on its own
    "guidance_channels": GUIDANCE["channels"],
    "guidance_interval": INTERVAL,
    # types only (null: the default; ditlab-eval: the checkpoint's own); val_loss_options checks the ranges
    **{f"val_loss.{k}": integer(null=True) for k in ("num_images", "num_times", "seed", "batch_size", "every_n_steps")},
}
SAMPLER = {"steps": COUNT}
OBJECTIVE = {"num_timesteps": COUNT, "time_shift": POSITIVE}


def _group(prefix: str, rules: dict[str, Rule]) -> dict[str, Rule]:
    return {f"{prefix}.{key}": rule for key, rule in rules.items()}


TRAIN = {
    "seed": SEED,
    "progress": BOOL,
    "overwrite": BOOL,
    "takeover_lock": BOOL,
    "optim.lr": number(0),
    "optim.weight_decay": number(0),
    "optim.betas": Rule(
        lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1), e.g. [0.9,0.999]",
    ),
    "ema.decay": number(0, 1),
    "divergence.max_loss": POSITIVE,
    "checkpoint.every_n_steps": integer(1, null=True, extra=" (null: last.ckpt only)"),
    "checkpoint.keep": integer(-1, extra=" (-1: all)"),
    "checkpoint.monitor_mode": choice("min", "max"),
    "checkpoint.monitor_keep": integer(1),
    "final_samples.num_samples": COUNT,
    "final_samples.batch_size": COUNT,
    "final_samples.grid_columns": COUNT,
    "final_samples.grid_upscale": COUNT,
    "final_samples.reuse_eval": BOOL,
    **_group("guidance", GUIDANCE),
    **_group("model", MODEL),
    **_group("data", DATA),
    **_group("trainer", TRAINER),
    **_group("eval", EVAL),
    **_group("sampler", SAMPLER),
    **_group("objective", OBJECTIVE),
}
SAMPLE = {
    "weights": choice("ema", "model"),
    "image_size": COUNT,
    "num_classes": integer(0),
    "num_samples": COUNT,
    "batch_size": COUNT,
    "labels": LABELS,
    "seed": SEED,
    "precision": choice("fp32", "bf16", "fp16"),
    "overwrite": BOOL,
    "progress": BOOL,
    "grid.rows": COUNT,
    "grid.columns": COUNT,
    "grid.upscale": COUNT,
    **_group("guidance", GUIDANCE),
    **_group("sampler", SAMPLER),
}
FLOPS = {
    "input_size": COUNT,
    "in_channels": COUNT,
    "num_classes": integer(0),
    "learn_sigma": BOOL,
    "output": choice("table", "json"),
    "paper_grid.patch_sizes": INT_LIST,
    **_group("model", MODEL),
}
EXTRACT = {
    **_group("data", DATA),  # first: num_workers interpolates data.num_workers, the key the user set
    "shard_size": COUNT,
    "batch_size": COUNT,
    "num_workers": integer(0),
    "dtype": choice("float16", "float32", "bfloat16"),
    "seed": SEED,
    "progress": BOOL,
}
EXPORT = {"weights": choice("ema", "model"), "overwrite": BOOL, **_group("sampler", SAMPLER)}
EVALUATE = {"progress": BOOL, **_group("eval", EVAL)}
# What a ``???`` key wants, for the message when it is not given.
REQUIRED_HINTS = {
    "cache_dir": "the directory for the cache, e.g. cache_dir=/data/latents/in256",
    "data.root": "the image folder, e.g. data.root=/data/imagenet/train",
    "data.cache_dir": "a ditlab-extract cache_dir, e.g. data.cache_dir=/data/latents/in256",
    "ckpt": "a checkpoint or run directory, e.g. ckpt=runs/<run>",
    "out": "the folder to write, e.g. out=exports/<name>",
}
OPTIONAL_MISSING = {"evaluate"}  # ditlab-eval's ref may stay unset (digits metrics have a built-in one)
SCHEMAS: dict[str, dict[str, Rule]] = {
    "train": TRAIN,
    "sample": SAMPLE,
    "flops": FLOPS,
    "extract": EXTRACT,
    "export": EXPORT,
    "evaluate": EVALUATE,
}


def check_config(config_name: str | None, cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, the first value of ``cfg`` that its schema does not accept."""
    rules = SCHEMAS.get(config_name or "", {})
    if config_name in SCHEMAS and config_name not in OPTIONAL_MISSING:
        missing = sorted(_missing_keys(cfg))
        if missing:
            key = missing[0]
            raise DitlabError(f"{key} is not set: pass {REQUIRED_HINTS.get(key, f'{key}=<value>')}")
    for key, rule in rules.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation this config cannot resolve (ditlab-eval's
            continue  # eval.guidance_scale -> ${guidance.scale}): a key this command does not read
        if value is _ABSENT or value == "???":
            continue
        if not rule.accepts(value):
            raise DitlabError(f"{key}={_show(value)} is not valid: give {rule.wants}")


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The ``???`` keys of ``node``, without resolving any interpolation (``${hydra:...}`` needs a running app)."""
    found = []
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            found.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig) and key != "hydra":
            found += _missing_keys(node[key], f"{prefix}{key}.")
    return found


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# Hydra's mutually exclusive command-line modes, by every spelling it accepts.
HYDRA_MODES = {
    "-m": "--multirun",
    "--multirun": "--multirun",
    "-c": "--cfg",
    "--cfg": "--cfg",
    "-i": "--info",
    "--info": "--info",
    "-sc": "--shell-completion",
    "--shell-completion": "--shell-completion",
    "-r": "--run",
    "--run": "--run",
}


def check_command_line(config_name: str, argv: Sequence[str]) -> None:
    """Compose ``argv`` as the tool's ``@hydra.main`` will and check it, before Hydra creates any folder
    or log file: a bad override is one line and leaves nothing behind. Commands with Hydra flags
    (``--cfg job``, ``--help``) are left to Hydra; the tool's task checks those configs. A ``-m`` sweep's
    jobs are composed and checked here, each swept value once (:mod:`ditlab.multirun`)."""
    modes = {HYDRA_MODES[a] for a in argv if a in HYDRA_MODES}
    if len(modes) > 1:  # Hydra's ValueError would be a traceback
        raise DitlabError(
            f"{' and '.join(sorted(modes))} cannot be combined: Hydra runs one mode per command "
            "(e.g. drop -m to print a sweep job's config with --cfg job)"
        )
    if any(a.startswith("-") for a in argv):
        overrides = [a for a in argv if a not in ("-m", "--multirun")]
        if len(overrides) == len(argv) or any(a.startswith("-") for a in overrides):
            return  # --cfg, --help, --info, -sc, -cd ...: Hydra's own
        from ditlab.multirun import multirun_jobs  # lazy: only -m commands parse sweeps

        for job in multirun_jobs(overrides):  # before Hydra creates the multirun folder
            check_overrides(config_name, job)
        return
    check_overrides(config_name, argv)


def check_overrides(config_name: str, argv: Sequence[str]) -> None:
    """Compose one job's overrides as the tool will and check the result (one line on any error)."""
    from ditlab.config import compose

    try:
        cfg = compose(config_name, list(argv))
    except DitlabError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors
        if any(a.lstrip("+~").startswith("hydra") for a in argv):
            return  # Hydra's own options compose only inside hydra.main, which reports its errors itself
        cause = f"\n{e.__cause__}" if e.__cause__ is not None else ""  # e.g. "Key 'max_step' is not in struct"
        raise DitlabError(one_line(f"{e}{cause}") or type(e).__name__) from None
    check_config(config_name, cfg)


def one_line(message: str) -> str:
    """Hydra's multi-line composition error as one line (its list of options joined, search path left out)."""
    parts: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line.startswith(("full_key:", "object_type=", "provider=", "Config search path")):
            continue
        if raw.startswith("\t") and parts:  # one option of "Available options in 'model':"
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        else:
            parts.append(line.rstrip("."))
    return "; ".join(parts)
