"""Latent-cache shards: safetensors files written atomically and read lazily (memory-mapped).

A shard is complete once its final name exists (it is written under a temporary name and renamed),
so an interrupted extraction leaves only finished shards plus temporaries that the next run redoes.
Readers open shards on first use in each process and read single rows, so memory does not grow
with the size of the cache.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ditlab.atomic import replace_atomically
from ditlab.latent_cache.manifest import feature_file
from ditlab.resumable_loader import item_generator

MAX_OPEN_SHARDS = 64  # per process; least recently used handles are closed beyond this


def write_shard(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata={"ditlab": json.dumps(meta)}))


def shard_meta(path: Path) -> dict[str, Any] | None:
    """The metadata of a finished shard, or None when it is missing, unreadable or truncated (to be redone)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:  # safetensors: u64 header length, JSON header, then the tensor bytes
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if path.stat().st_size < 8 + header_len + data_end:
            return None  # truncated: the tensors end beyond the file
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["ditlab"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, IndexError, MemoryError, OverflowError):
        return None


class LatentCacheDataset(Dataset):
    """Items ``(x, label)``: x = cat([mean, std]) of the image or, with probability 0.5, of its flip.
    ``features``: items ``(x, label, feat)``, with the REPA encoder's stored output for the same image or flip."""

    def __init__(self, cache_dir: Path, manifest: dict[str, Any], random_flip: bool, features: bool = False):
        self.files = [str(cache_dir / s["file"]) for s in manifest["shards"]]
        self.feature_files = [str(cache_dir / feature_file(k)) for k in range(len(self.files))] if features else None
        self.offsets = [0]  # item i lives in shard k where offsets[k] <= i < offsets[k + 1]
        for s in manifest["shards"]:
            self.offsets.append(self.offsets[-1] + int(s["count"]))
        self.has_std = bool(manifest["has_std"])
        self.random_flip = random_flip
        self._handles: OrderedDict[str, Any] = OrderedDict()  # open files by path, least recently used first

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getstate__(self) -> dict[str, Any]:  # worker processes open their own handles
        return {**self.__dict__, "_handles": OrderedDict()}

    def _open(self, path: str):
        handle = self._handles.pop(path, None)
        if handle is None:
            handle = safe_open(path, framework="pt")
            if len(self._handles) >= MAX_OPEN_SHARDS:
                self._handles.popitem(last=False)
        self._handles[path] = handle
        return handle

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.offsets, i) - 1
        row = i - self.offsets[k]
        shard = self._open(self.files[k])
        suffix = "_flip" if self.random_flip and torch.rand((), generator=item_generator(i)) < 0.5 else ""
        names = ["mean" + suffix] + (["std" + suffix] if self.has_std else [])
        x = torch.cat([shard.get_slice(name)[row : row + 1][0] for name in names]).float()  # (2C or C, h, w)
        label = int(shard.get_slice("label")[row : row + 1][0])
        if self.feature_files is None:
            return x, label
        feat = self._open(self.feature_files[k]).get_slice("feat" + suffix)[row : row + 1][0].float()
        return x, label, feat
