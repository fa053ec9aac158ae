"""Name -> class registries for the swappable parts (blocks, objectives, samplers, encoders, data).

A config group file names its entry with ``name:``; every other key is passed to the class
constructor. A user plugs in their own part without editing ditlab:

    # my_blocks.py
    from ditlab.models.blocks import BLOCKS
    @BLOCKS.register("my_block")
    class MyBlock(...): ...

    # conf/block/my_block.yaml (in a directory added with hydra.searchpath)
    name: my_block
    module: my_blocks        # imported before the lookup, so the decorator has run

Unknown names fail with a message that lists what is registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from omegaconf import DictConfig, OmegaConf

from ditlab.errors import DitlabError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str):
        self.kind = kind  # e.g. "block"
        self.group = group  # the Hydra config group that selects it, e.g. "block"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise DitlabError(f"a {self.kind} named '{name}' is already registered; pick another name")
            self._entries[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str, module: str | None = None) -> T:
        if module:
            import_plugin(module, f"{self.group}.module")
        if name not in self._entries:
            raise DitlabError(
                f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}. "
                f"Choose one with {self.group}=<name>, or register your own and name its module in {self.group}.module"
            )
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def import_plugin(module: str, option: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise DitlabError(f"cannot import plugin module '{module}' (set by {option}): {e}") from None


def split_name(cfg: Any) -> tuple[str, str | None, dict]:
    """Return (name, module, kwargs) from a group config (DictConfig or dict)."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name = d.pop("name")
    module = d.pop("module", None)
    return name, module, d
