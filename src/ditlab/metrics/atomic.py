"""Cache files that are written once, atomically, and never replaced."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch


def write_once(path: Path, payload: dict[str, Any]) -> bool:
    """Save ``payload`` at ``path`` unless something is already there; True if this call wrote it.

    A uniquely named temporary file is hard-linked into place, which fails (instead of replacing)
    when another process got there first; readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(payload, tmp)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: rename, still never over an existing file
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
