"""Auxiliary training losses any objective can carry (config group ``aux``): ``none`` | ``repa``."""

from ditlab.auxloss import repa as _repa  # noqa: F401  (registers "repa")
from ditlab.auxloss.base import AUX_LOSSES, AuxLoss, NoAux, build_aux

__all__ = ["AUX_LOSSES", "AuxLoss", "NoAux", "build_aux"]
