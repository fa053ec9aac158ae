"""DiT backbone, the conditioning-block registry and checkpoint interop."""

from ditlab.models.blocks import BLOCKS, Conditioning, DiTBlock
from ditlab.models.dit import DiT, model_tag
from ditlab.models.official import from_official

__all__ = ["BLOCKS", "Conditioning", "DiT", "DiTBlock", "from_official", "model_tag"]
