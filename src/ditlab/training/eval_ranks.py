"""What every process of an evaluation does together: rank 0 goes first where it may download or train
something (the others then read it), real-image statistics are sharded over the ranks and cached by
rank 0, and evaluation draws never touch training's random streams."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from ditlab.errors import DitlabError
from ditlab.metrics.real_stats import (
    RealStats,
    compute_real_stats,
    load_real_stats,
    merge_shards,
    real_image_batches,
    save_real_stats,
    stats_key,
)

log = logging.getLogger("ditlab")


def run_real_stats(
    trainer: L.Trainer,
    data: Any,
    eval_cfg: DictConfig,
    extractor: Any,
    needs: dict[str, bool],
    device: torch.device,
    cache_dir: str,
) -> tuple[dict[str, RealStats], dict[str, Any]]:
    """Cached statistics if rank 0 finds them (every rank reads the file); otherwise every rank
    extracts features of its shard of the real images, the shards are merged and rank 0 caches them."""
    rank, world = trainer.global_rank, trainer.world_size
    count, batches = real_image_batches(data, eval_cfg.real_count, int(eval_cfg.batch_size), rank, world)
    key = stats_key(data.describe(), data.resolution, count, extractor)
    reference = {"count": count, "extractor": extractor.identity}
    found: dict[str, dict[str, RealStats] | None] = {}  # rank 0 keeps what it read; only "found or not" is broadcast

    def probe() -> bool:
        found["stats"] = load_real_stats(cache_dir, key, needs)
        return found["stats"] is not None

    if rank_zero_first(trainer, probe, others_run=False):
        stats = found.get("stats") or load_real_stats(cache_dir, key, needs)
        if stats is None:
            raise DitlabError(
                f"rank {rank} cannot read the real statistics rank 0 found; put paths.cache_dir "
                "(DITLAB_CACHE) on storage every process sees"
            )
        return stats, reference
    t0 = time.time()
    stats = compute_real_stats(batches, extractor, device, needs, num_images=len(range(rank, count, world)))
    if world > 1:
        parts: list[Any] = [None] * world
        torch.distributed.all_gather_object(parts, stats)
        stats = merge_shards(parts)
    if rank == 0:
        save_real_stats(cache_dir, key, stats)
        log.info(
            "real statistics (%s, %d images) computed in %.1fs and cached", extractor.name, count, time.time() - t0
        )
    return stats, reference


def rank_zero_first(trainer: L.Trainer, fn: Callable[[], Any], others_run: bool = True) -> Any:
    """Run ``fn`` on rank 0, share its result (or its error, so no process waits forever), then run it
    on the other ranks too (``others_run``) or hand them rank 0's result."""
    if trainer.world_size == 1:
        return fn()
    result, error = None, None
    if trainer.global_rank == 0:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            error = str(e) if isinstance(e, DitlabError) else f"{type(e).__name__}: {e}"
    result, error = trainer.strategy.broadcast((result, error), src=0)
    if error:
        raise DitlabError(error)
    if trainer.global_rank != 0 and others_run:
        result = fn()
    return result


@contextlib.contextmanager
def rng_untouched(device: torch.device):
    """Evaluation draws from its own generators; this keeps the global RNG streams of training intact."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
