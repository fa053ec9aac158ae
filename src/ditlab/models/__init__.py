"""DiT backbone, the conditioning-block registry and checkpoint interop."""

from ditlab.models.blocks import BLOCKS, Conditioning, DiTBlock
from ditlab.models.dit import DiT, model_tag

__all__ = ["BLOCKS", "Conditioning", "DiT", "DiTBlock", "model_tag"]
