"""The training DataLoader shared by the image-folder and latent-cache datasets.

Each of the ``world_size`` processes reads its own ``1 / world_size`` of the data: a
``DistributedSampler`` seeded with the run's seed gives disjoint index sets per epoch, a new
permutation every epoch (Lightning calls ``set_epoch``), and the same order for the same seed. It
is built here (not injected by Lightning) so one process uses the same code path as many, and it
is resumable mid-epoch (:mod:`ditlab.resumable_loader`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from ditlab.data.base import ImageDataModule
from ditlab.errors import DitlabError
from ditlab.resumable_loader import ResumableLoader, ResumableSampler


def process_rank(dm: ImageDataModule) -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) outside a Trainer."""
    trainer = dm.trainer
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


def sharded_train_loader(
    dataset: Dataset, dm: ImageDataModule, seed: int, collate_fn: Callable | None = None
) -> ResumableLoader:
    rank, world = process_rank(dm)
    if len(dataset) < dm.batch_size:
        raise DitlabError(
            f"the {dm.name} data holds {len(dataset)} items, fewer than one global batch; "
            f"lower data.batch_size (now {dm.batch_size})"
        )
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    return ResumableLoader(
        dataset,
        batch_size=dm.per_device_batch_size(),
        sampler=sampler,
        drop_last=True,
        num_workers=dm.num_workers,
        persistent_workers=dm.num_workers > 0,
        collate_fn=collate_fn,
    )
