"""Device and precision choices shared by the tools that run outside a Lightning Trainer
(``ditlab-sample``, ``ditlab-extract``, the benchmarks) and by evaluation's sampling."""

from __future__ import annotations

import contextlib
import os

import torch

from ditlab.errors import DitlabError

# Sampling precision -> autocast dtype (None: plain fp32).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this process's GPU (``LOCAL_RANK``) when CUDA is available, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DitlabError(f"device={name} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DitlabError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (a key of :data:`AUTOCAST_DTYPES`) on ``device``; fp32 changes nothing."""
    dtype = AUTOCAST_DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
