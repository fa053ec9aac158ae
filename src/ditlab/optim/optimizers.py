"""The optimizer registry and the one built in: AdamW, as DiT trains (lr 1e-4, no weight decay)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ditlab.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer", "optim")

NamedParams = Sequence[tuple[str, torch.nn.Parameter]]


def decay_groups(named_params: NamedParams, weight_decay: float, exclude: Iterable[str] = ()) -> list[dict]:
    """Parameter groups for decoupled weight decay. Without decay: one group (the optimizer then holds
    exactly the state it held before groups existed). With decay: tensors of fewer than two dimensions
    (biases, norm gains) and those whose name contains one of ``exclude`` (e.g. the class-embedding table)
    get none, as in timm and nanoGPT: decaying them pulls gains and offsets towards zero for no benefit."""
    params = [p for _, p in named_params]
    if not weight_decay:
        return [{"params": params, "weight_decay": 0.0}]
    patterns = tuple(exclude)
    no_decay = [p for n, p in named_params if p.ndim < 2 or any(s in n for s in patterns)]
    kept = {id(p) for p in no_decay}
    decay = [p for p in params if id(p) not in kept]
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


@OPTIMIZERS.register("adamw")
def adamw(
    named_params: NamedParams,
    lr: float,
    weight_decay: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay_exclude: Sequence[str] = (),
) -> torch.optim.Optimizer:
    """AdamW with torch's fused kernel (one kernel for all tensors; CPU and CUDA) where it exists. torch's
    default on CPU is a Python loop over the tensors: 2.4x slower per step for DiT-tiny, measured."""
    groups = decay_groups(named_params, weight_decay, weight_decay_exclude)
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]) or None
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)
