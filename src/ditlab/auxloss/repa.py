"""REPA: representation alignment (Yu et al., ICLR 2025, arXiv 2410.06940; github.com/sihyun-yu/REPA).

The hidden states output by block ``depth`` (1-indexed, REPA's ``--encoder-depth``; image tokens
only) go through a token-wise projector MLP, D -> P -> P -> F with SiLU (REPA ``build_mlp``), and are
pulled toward a frozen encoder's features of the clean image, token by token:
``repa = −mean_tokens cos(proj(h), target)``, added to the objective's loss as ``weight · repa``
(REPA's λ = ``--proj-coeff`` 0.5). Its gradient reaches the projector and the trunk up to that block
only; the encoder runs in eval mode without gradients and is kept out of checkpoints.

The encoder sees the pixel images of the batch (before any latent encoder). With ``data=latents``
the batches hold no pixels: the cache must hold the encoder's features of every image and flip
(``ditlab-extract ... aux=repa``, same ``aux.encoder*`` options), which the batches then carry and
REPA reads instead of running the encoder (:class:`~ditlab.auxloss.targets.CachedTarget`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ditlab.auxloss.base import AUX_LOSSES, AuxLoss
from ditlab.auxloss.targets import CachedTarget, build_target, target_identity, to_grid_tokens
from ditlab.errors import DitlabError
from ditlab.user_cache import default_cache_dir


@AUX_LOSSES.register("repa")
class REPA(AuxLoss):
    name = "repa"

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        latent_encoder: Any = None,
        encoder: str = "dinov2_vitb14",
        encoder_resolution: int | None = None,
        encoder_preprocess: str | None = None,
        depth: int = 8,
        projector_dim: int = 2048,
        weight: float = 0.5,
        cache_dir: str | None = None,  # None: the user's cache folder (ditlab.user_cache)
    ):
        super().__init__()
        num_blocks = len(model.blocks)
        if not 1 <= int(depth) <= num_blocks:
            raise DitlabError(f"aux.depth={depth} is not a block of this {num_blocks}-block model; use 1..{num_blocks}")
        self.depth, self.weight = int(depth), float(weight)
        self.grid = model.x_embedder.grid_size
        self.num_tokens = model.num_tokens
        image_shape = (1, data.channels, data.resolution, data.resolution)
        if hasattr(data, "cached_features"):  # a latent cache: stored targets, checked against these options
            identity = target_identity(encoder, encoder_resolution, encoder_preprocess)
            shape = data.cached_features(identity)  # one encoder output, e.g. (L, F) tokens or (F, h, w)
            target: Any = CachedTarget(identity)
            self.target_dim = int(shape[0] if len(shape) == 3 else shape[-1])
        else:
            cache_dir = cache_dir or default_cache_dir()
            target = build_target(encoder, encoder_resolution, encoder_preprocess, cache_dir, data.resolution)
            probe = target(torch.zeros(image_shape))  # one dry run: the feature size the projector must produce
            self.target_dim = int(probe.shape[1] if probe.dim() == 4 else probe.shape[-1])
        self.__dict__["target"] = target  # frozen: not a submodule, so never trained or checkpointed
        D = model.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(D, projector_dim),
            nn.SiLU(),
            nn.Linear(projector_dim, projector_dim),
            nn.SiLU(),
            nn.Linear(projector_dim, self.target_dim),
        )
        for layer in self.projector:
            if isinstance(layer, nn.Linear):  # REPA: the model-wide xavier-uniform init, zero biases
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self._image_shape = image_shape
        self._hidden: torch.Tensor | None = None

    @contextlib.contextmanager
    def watch(self, model: nn.Module) -> Iterator[None]:
        def record(_module, _args, output):
            self._hidden = output[:, : self.num_tokens]  # in-context's [t, y] tokens are not aligned

        handle = model.blocks[self.depth - 1].register_forward_hook(record)
        try:
            yield
        finally:
            handle.remove()

    def alignment(self, hidden: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Per-sample −mean cosine similarity between projected hidden tokens and the encoder's targets
        (``images``: the batch's pixels, or the encoder features a latent cache stored for them)."""
        target = to_grid_tokens(self.target(images), self.grid).to(hidden.dtype)  # (N, G² or 1, F)
        projected = self.projector(hidden)  # (N, T, F)
        return -F.cosine_similarity(projected, target, dim=-1).mean(dim=1)

    def add_to(self, terms: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._hidden is None:
            raise DitlabError(
                f"REPA saw no output of block {self.depth}: the objective did not run the model inside watch()"
            )
        repa = self.alignment(self._hidden, images)
        self._hidden = None
        return {**terms, "loss": terms["loss"] + self.weight * repa, "repa": repa}

    @property
    def cached(self) -> bool:
        return isinstance(self.target, CachedTarget)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "encoder": self.target.name,
            "targets": "cached" if self.cached else "live",  # cached: read from the latent cache, encoder not run
            "depth": self.depth,
            "weight": self.weight,
            "target_dim": self.target_dim,
            "projector_params": sum(p.numel() for p in self.projector.parameters()),
        }

    def cost(self) -> dict[str, float]:
        """Forward Gflops (MACs) per training image: the projector on every token, the encoder once."""
        linears = [m for m in self.projector if isinstance(m, nn.Linear)]
        projector = self.num_tokens * sum(m.in_features * m.out_features for m in linears)
        if self.cached:  # the targets were computed once at extraction: no encoder runs while training
            return {"projector_gflops": projector / 1e9, "encoder_gflops": 0.0}
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:  # CPU SDPA is invisible to the counter
            self.target(torch.zeros(self._image_shape, device=next(self.projector.parameters()).device))
        return {"projector_gflops": projector / 1e9, "encoder_gflops": counter.get_total_flops() / 2 / 1e9}
