"""Checkpoint files that are complete or absent, and no orphaned temporaries.

Lightning's default writer goes through an fsspec transaction whose temporary file has a random
name; a process killed mid-write leaves it behind (checkpoints are hundreds of MB at DiT-XL size).
Here a checkpoint is written to ``<name>.tmp-<pid>`` and renamed into place
(:mod:`ditlab.atomic`), and a new attempt on the run removes what killed writers left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ditlab.atomic import remove_temporaries, replace_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda tmp: torch.save(checkpoint, tmp))


def remove_orphaned_temporaries(folder: Path) -> None:
    """Delete ``*.ckpt.tmp-*`` files that killed writers left in ``folder`` (call under the run lock)."""
    for ckpt in {p.name.split(".tmp-")[0] for p in Path(folder).glob("*.ckpt.tmp-*")}:
        remove_temporaries(Path(folder) / ckpt)
