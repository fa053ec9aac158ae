"""Reference batches in the layout of the ADM evaluator (guided-diffusion ``evaluations/``): one
``.npz`` holding ``mu``/``sigma`` (Inception pool features, 2048-d), ``mu_s``/``sigma_s`` (the sFID
spatial features, 2023-d) and the reference images ``arr_0`` (uint8 N×H×W×3), from which the
evaluator computes the pool activations that precision/recall need. ditlab also reads and writes
those activations directly (``activations``, ``activations_s``), so a reference can be used
without its images, and writes other extractors' outputs as ``<extractor>_<output>_mu`` etc.

Whatever a metric needs and the file lacks is computed from ``arr_0`` if it is there; otherwise
reading stops with one line naming the metric, the missing keys and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditlab.errors import DitlabError
from ditlab.metrics.extractors import Extractor
from ditlab.metrics.frechet import Moments
from ditlab.metrics.suite import MetricSuite, RealSide

ADM_KEYS = {
    ("inception", "pool"): ("mu", "sigma", "activations"),
    ("inception", "spatial"): ("mu_s", "sigma_s", "activations_s"),
}


def npz_keys(extractor: str, output: str) -> tuple[str, str, str]:
    """(mean, covariance, activations) key names of one extractor output."""
    return ADM_KEYS.get((extractor, output), tuple(f"{extractor}_{output}_{k}" for k in ("mu", "sigma", "activations")))


def _metrics_using(suite: MetricSuite, extractor: str, output: str) -> str:
    return "/".join(n for n, s in suite.specs.items() if s.extractor == extractor and s.output == output and s.real)


def read_reference(
    path: str | Path,
    suite: MetricSuite,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 250,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, dict[str, RealSide]]:
    """The reference side of every metric in ``suite`` from an ADM-layout ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise DitlabError(
            f"reference batch {path} not found; pass an ADM-layout .npz (mu, sigma, mu_s, sigma_s, arr_0)"
        )
    real: dict[str, dict[str, RealSide]] = {}
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        count = len(f["arr_0"]) if "arr_0" in keys else 0
        for extractor, needs in suite.needs_real().items():
            sides, missing = {}, {}
            for output, need_features in needs.items():
                mu, sigma, acts = npz_keys(extractor, output)
                side = RealSide()
                if acts in keys:
                    side.features = torch.from_numpy(f[acts].astype(np.float32))
                if mu in keys and sigma in keys:
                    side.moments = Moments(
                        torch.from_numpy(f[mu]).double(),
                        torch.from_numpy(f[sigma]).double(),
                        count or (len(side.features) if side.features is not None else 0),
                    )
                elif side.features is not None:
                    side.moments = Moments.of(side.features)
                if side.moments is None or (need_features and side.features is None):
                    missing[output] = need_features
                    if "arr_0" not in keys:
                        want = (
                            f"{acts}"
                            if side.moments is not None
                            else f"{mu}+{sigma}" + (f" or {acts}" if not need_features else f" and {acts}")
                        )
                        raise DitlabError(
                            f"{path} lacks {want} that {_metrics_using(suite, extractor, output)} need, and has no "
                            f"arr_0 images to compute them from; use a reference batch that has them or drop the metric"
                        )
                sides[output] = side
            if missing:  # one extractor pass over the reference images for everything missing
                computed = _from_images(
                    f["arr_0"], suite.extractors[extractor], missing, device, batch_size, rank, world_size
                )
                for output, stats in computed.items():
                    new = stats.side()
                    sides[output] = RealSide(
                        sides[output].moments or new.moments,
                        sides[output].features if sides[output].features is not None else new.features,
                    )
            real[extractor] = sides
    return real


def _from_images(
    images: np.ndarray,
    extractor: Extractor,
    needs: dict[str, bool],
    device,
    batch_size: int,
    rank: int,
    world_size: int,
):
    from ditlab.metrics.real_stats import compute_real_stats, merge_shards

    if images.dtype != np.uint8 or images.ndim != 4:
        raise DitlabError(f"reference arr_0 must be uint8 (N, H, W, C) images, got {images.dtype} {images.shape}")
    mine = images[rank::world_size]
    batches = (
        torch.from_numpy(mine[i : i + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        for i in range(0, len(mine), batch_size)
    )
    # uint8 -> [-1, 1] -> uint8 is exact under DiT's rule (clamp(127.5 x + 128) truncated), so the
    # network sees the stored pixels.
    stats = compute_real_stats(batches, extractor, device, needs, num_images=len(mine))
    if world_size > 1:
        parts: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(parts, stats)
        stats = merge_shards(parts)
    return stats


def write_reference(
    path: str | Path,
    real: dict[str, dict[str, RealSide]],
    images: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write statistics (and optionally the images as ``arr_0``) in the ADM layout."""
    arrays: dict[str, np.ndarray] = {}
    for extractor, sides in real.items():
        for output, side in sides.items():
            mu, sigma, acts = npz_keys(extractor, output)
            if side.moments is not None:
                arrays[mu], arrays[sigma] = side.moments.mu.cpu().numpy(), side.moments.sigma.cpu().numpy()
            if side.features is not None:
                arrays[acts] = side.features.cpu().float().numpy()
    if images is not None:
        arrays["arr_0"] = np.asarray(images)
    if info:
        arrays["ditlab_info"] = np.array(json.dumps(info, sort_keys=True, default=str))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
