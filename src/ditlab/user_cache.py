"""Where ditlab keeps what it can rebuild (the digits classifier, real-image statistics, encoder
features): one folder per user, shared by every working directory, as torch and huggingface do.

``$DITLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/ditlab``, else ``~/.cache/ditlab``. ``paths.cache_dir``
(conf/paths/default.yaml) reads it through ``${ditlab.user_cache:}``; ``ditlab-classify`` uses it too.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> str:
    """``$DITLAB_CACHE``, else ``$XDG_CACHE_HOME/ditlab``, else ``~/.cache/ditlab`` (empty variables count as unset)."""
    explicit = os.environ.get("DITLAB_CACHE", "").strip()
    if explicit:
        return str(Path(explicit).expanduser())
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec: a relative $XDG_CACHE_HOME is invalid and ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return str(base / "ditlab")
