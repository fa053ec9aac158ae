"""Files that readers never see half-written: write to a temporary sibling, then move it into place.

``replace_atomically`` replaces whatever is at the target (manifests, shards, grids);
``write_once`` never does (caches shared by concurrent runs: the first complete file wins). A
temporary is named ``<name>.tmp-<pid>``, so an interrupted writer leaves only files that
:func:`remove_temporaries` recognises.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

Writer = Callable[[Path], None]  # writes the whole file at the path it is given


def temporary_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def remove_temporaries(path: Path) -> None:
    """Delete what interrupted writers of ``path`` left behind."""
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        tmp.unlink(missing_ok=True)


def replace_atomically(path: Path, write: Writer) -> None:
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_once(path: Path, write: Writer) -> bool:
    """Write ``path`` unless something is already there; True if this call wrote it.

    The temporary is hard-linked into place, which fails (instead of replacing) when another
    process got there first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    write(tmp)
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
