"""Exponential moving average of the weights (DiT: decay 0.9999 after every optimizer step).

The EMA model starts as an exact copy, covers every parameter (the frozen ``pos_embed`` too, so
it can be used as a complete state dict), is never trained and is what sampling and metrics use.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    return ema.eval()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay · ema + (1 − decay) · model, for every parameter."""
    ema_params = [p for _, p in ema.named_parameters()]
    model_params = [p.detach() for _, p in model.named_parameters()]
    torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
