"""The auxiliary-loss interface: extra loss terms computed from the same forward pass as the objective.

The training step wraps the objective's call in ``aux.watch(model)`` (an auxiliary loss may record
hidden states there) and then calls ``aux.add_to(terms, images)``, which adds its own per-sample terms
and their weighted sum to ``terms["loss"]``. The objective never knows an auxiliary loss exists, so
every objective can carry every auxiliary loss. The module's parameters (e.g. REPA's projector) are
trained and checkpointed with the model; they are not part of the DiT and cost nothing at inference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from ditlab.registry import Registry

AUX_LOSSES: Registry[type[AuxLoss]] = Registry("auxiliary loss", "aux")


class AuxLoss(nn.Module):
    name: str = ""

    @contextlib.contextmanager
    def watch(self, model: nn.Module) -> Iterator[None]:
        yield

    def add_to(self, terms: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
        return terms

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def cost(self) -> dict[str, float]:
        """Training-only forward Gflops per image, reported apart from the DiT's."""
        return {}


@AUX_LOSSES.register("none")
class NoAux(AuxLoss):
    name = "none"


def build_aux(cfg: Any, model: nn.Module, data: Any, encoder: Any) -> AuxLoss:
    """The ``aux`` group's loss for this model and data (``None``/missing group: no auxiliary loss)."""
    if cfg is None or cfg.get("name") == "none":
        return NoAux()
    return AUX_LOSSES.build(cfg, model=model, data=data, latent_encoder=encoder)
