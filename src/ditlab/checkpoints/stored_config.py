"""A checkpoint's stored config is data, never code.

ditlab stores the *resolved* config in every checkpoint, so a genuine one holds no ``${...}``
interpolation; one that does (``${oc.env:AWS_SECRET}``) is refused instead of resolved. A part's
``module`` key names Python code that the registries import; a stored config may name only modules
that the user names on the command line (the run's own config on resume, ``plugins=[...]`` for
ditlab-sample), so opening someone else's checkpoint never imports anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ditlab.errors import DitlabError


def stored_config(ckpt: Mapping[str, Any], source: str, trusted_modules: Iterable[str] = ()) -> DictConfig:
    """The run config recorded in a ditlab checkpoint, checked to be plain data."""
    meta = ckpt.get("ditlab")
    config = meta.get("config") if isinstance(meta, Mapping) else None
    if not isinstance(config, Mapping):
        raise DitlabError(f"{source} has no stored run config (ditlab.config); it is not a ditlab training checkpoint")
    trusted = {str(m) for m in trusted_modules if m}
    for key, value in _leaves(meta):  # the config and the recorded part descriptions (encoder, data, ...)
        key = key.removeprefix("config.")
        if isinstance(value, str) and "${" in value:
            raise DitlabError(
                f"{source} stores an unresolved interpolation at {key} ({value[:60]!r}); ditlab checkpoints store "
                "resolved values, so this file was edited: it is not used"
            )
        if key.split(".")[-1] == "module" and value and str(value) not in trusted:
            raise DitlabError(
                f"{source} names the Python module '{value}' ({key}); a checkpoint never chooses code to import. "
                f"If you trust it, name it yourself: plugins=[{value}] (ditlab-sample) or {key}={value} (ditlab-train)"
            )
    return OmegaConf.create(dict(config))


def modules_named(cfg: Any) -> set[str]:
    """Every ``*.module`` value in a config the user composed (their own plugins)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return {str(v) for k, v in _leaves(container) if k.split(".")[-1] == "module" and v}


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], node
