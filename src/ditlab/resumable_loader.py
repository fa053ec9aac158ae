"""A training loader that a checkpoint can stop and restart mid-epoch, bitwise (no ditlab imports:
the data modules and the latent cache both use it).

Lightning saves and restores a loader's position only when the loader object itself has
``state_dict``/``load_state_dict`` (a sampler with them inside a plain ``DataLoader`` is ignored),
and it calls ``load_state_dict`` before ``iter()``. :class:`ResumableLoader` counts the batches the
training loop has received and, after a restore, skips that many in the same epoch order.
:class:`ResumableSampler` is a ``DistributedSampler`` (so Lightning does not wrap it again) whose
order depends only on ``(seed, epoch)``.

Per-item randomness (random flips) must not depend on the worker RNG, which a resume cannot
reproduce (persistent workers carry their state across epochs, and a restarted epoch skips items).
The sampler therefore hands out :class:`ItemKey` indices: plain ints that also carry a key
``(seed, epoch, index)``, from which :func:`item_generator` makes the item's own generator. The
same item in the same epoch is augmented the same way whatever the worker count, world size or
restart point. (torchdata's ``StatefulDataLoader`` also saves positions, but it is not a dependency
of ditlab and it restores before Lightning sets the sampler epoch.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler


class ItemKey(int):
    """A dataset index that also names the item's draw: ``(seed, epoch, index)``."""

    key: tuple[int, int, int]

    def __new__(cls, index: int, seed: int, epoch: int) -> ItemKey:
        obj = super().__new__(cls, index)
        obj.key = (int(seed), int(epoch), int(index))
        return obj

    def __reduce__(self):  # worker processes receive indices pickled
        seed, epoch, index = self.key
        return ItemKey, (index, seed, epoch)


def item_generator(index: int) -> torch.Generator | None:
    """The item's own generator when ``index`` is an :class:`ItemKey`; None (global RNG) otherwise."""
    key = getattr(index, "key", None)
    if key is None:
        return None
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> 1))


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way and yields :class:`ItemKey` indices."""

    start = 0  # items of this epoch's shard to skip once (set by the loader after a restore)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.start :]
        self.start = 0
        return iter([ItemKey(i, self.seed, self.epoch) for i in indices])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose position (batches received this epoch) is saved in every checkpoint."""

    _yielded = 0
    _restored: tuple[int, int] | None = None  # (epoch, batches already trained) from a checkpoint

    def __iter__(self) -> Iterator[Any]:
        # A generator: this body runs at the first next(), i.e. after Lightning's set_epoch. A checkpoint
        # taken at the end of an epoch restores into the next one, which starts from its first batch.
        skip = 0
        if self._restored is not None and self._restored[0] == self.sampler.epoch:
            skip = self._restored[1]
        self._restored = None
        self.sampler.start = skip * self.batch_size
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1  # counted where the loop receives a batch (workers run ahead)
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._restored = (int(state["epoch"]), int(state["yielded"]))
