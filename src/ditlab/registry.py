"""Name -> class registries for the swappable parts (blocks, objectives, samplers, encoders, data, ...).

A config group file names its entry with ``name:``; every other key is passed to the class
constructor. :meth:`Registry.build` is the one way a part is made: look-up, construction, and the one
line for a bad option. A user plugs in their own part without editing ditlab:

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

    def get(self, name: str, module: str | None = None, *, module_at: str | None = None) -> T:
        """The entry ``name``, after importing the user's ``module`` (the option that set it: ``module_at``)."""
        module_at = module_at or f"{self.group}.module"
        if module:
            import_plugin(module, module_at)
        if name not in self._entries:
            raise DitlabError(
                f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}. "
                f"Choose one with {self.group}=<name>, or register your own and name its module in {module_at}"
            )
        return self._entries[name]

    def build(
        self,
        cfg: Any,
        *args: Any,
        module: str | None = None,
        module_at: str | None = None,
        options_at: str | None = None,
        **context: Any,
    ) -> Any:
        """Look up and construct one part.

        ``cfg`` is a group config (``name:``, optional ``module:``, every other key a constructor option)
        or a bare name (then ``module`` names the user's module). ``args`` and ``context`` are what ditlab
        passes besides the user's options: the model, the data, the block's width. A constructor that
        refuses the options is one line naming ``options_at`` (default ``<group>.*``).
        """
        if isinstance(cfg, str):
            name, options = cfg, {}
        else:
            name, cfg_module, options = split_name(cfg)
            module = module or cfg_module
        factory: Any = self.get(name, module, module_at=module_at)
        try:
            return factory(*args, **options, **context)
        except TypeError as e:
            raise self.bad_options(name, e, options_at) from None

    def bad_options(self, name: str, error: Exception, options_at: str | None = None) -> DitlabError:
        """The one line for options a part's constructor refused."""
        return DitlabError(f"bad options for {self.kind} '{name}' ({options_at or self.group + '.*'}): {error}")

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
