"""Reference statistics of the real images, computed once and cached.

A cache entry is keyed by the dataset (its ``describe()``), resolution, image count and the
feature extractor's identity (network, weights digest, resize mode). It holds the Fréchet
sufficient statistics (feature sum, sum of outer products, count, float64) and, when a kernel
metric asks for them, the features themselves in a sibling file. Files are written atomically
(temporary file + hard link, which fails if the target exists), are never overwritten, and are
read with ``weights_only=True``; an entry whose stored key differs from the requested one is an
error, not a silent recompute.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ditlab.atomic import write_once
from ditlab.errors import DitlabError
from ditlab.inputs import load_weights
from ditlab.metrics.extractors import Extractor
from ditlab.metrics.frechet import Moments
from ditlab.metrics.images import real_to_uint8, to_metric_input
from ditlab.metrics.suite import RealSide
from ditlab.progress import bar as progress_bar

CACHE_SUBDIR = "real_stats"
CACHE_FORMAT = 2  # 2: one entry per extractor output (pool, spatial, ...)
# What identifies the real images in a data module's describe() (not batch size, workers, counters).
DATASET_KEY_FIELDS = ("name", "root", "cache_dir", "resolution", "channels", "num_classes")


@dataclass
class RealStats:
    """Sufficient statistics of one extractor output over the real images."""

    feature_sum: torch.Tensor  # (d,) float64
    feature_cov_sum: torch.Tensor  # (d, d) float64, sum of f fᵀ
    count: int
    features: torch.Tensor | None = None  # (count, d) float32, only for kernel / manifold metrics

    def side(self) -> RealSide:
        return RealSide(Moments.from_sums(self.feature_sum, self.feature_cov_sum, self.count), self.features)


def stats_key(dataset: dict[str, Any], resolution: int, count: int, extractor: Extractor) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "dataset": {k: dataset[k] for k in DATASET_KEY_FIELDS if k in dataset},
        "resolution": int(resolution),
        "count": int(count),
        "extractor": extractor.identity,
    }


def cache_path(cache_dir: str | Path, key: dict[str, Any], output: str, features: bool = False) -> Path:
    key = {**key, "output": output}
    digest = hashlib.sha256(_key_text(key).encode()).hexdigest()[:12]
    name = (
        f"{key['dataset'].get('name', 'data')}_r{key['resolution']}_n{key['count']}_"
        f"{key['extractor']['name']}_{output}_{digest}"
    )
    return Path(cache_dir) / CACHE_SUBDIR / (name + ("_features.pt" if features else ".pt"))


def load_real_stats(cache_dir: str | Path, key: dict[str, Any], needs: dict[str, bool]) -> dict[str, RealStats] | None:
    """The cached entries for ``key`` (output -> need the features too), or None when (part of)
    them has not been computed yet."""
    out = {}
    for output, need_features in needs.items():
        path, fpath = cache_path(cache_dir, key, output), cache_path(cache_dir, key, output, features=True)
        if not path.is_file() or (need_features and not fpath.is_file()):
            return None
        entry = _load_checked(path, {**key, "output": output})
        stats = RealStats(entry["feature_sum"], entry["feature_cov_sum"], int(entry["count"]))
        if need_features:
            stats.features = _load_checked(fpath, {**key, "output": output})["features"]
        out[output] = stats
    return out


def compute_real_stats(
    batches: Iterable[torch.Tensor],
    extractor: Extractor,
    device: torch.device | str,
    needs: dict[str, bool],
    num_images: int | None = None,
) -> dict[str, RealStats]:
    """Features of real [-1, 1] image batches, one extractor pass -> statistics of each needed output.
    A bar counts the images (``num_images``: how many this process reads, for its ETA)."""
    stats = {
        o: RealStats(
            torch.zeros(extractor.outputs[o], dtype=torch.float64),
            torch.zeros(extractor.outputs[o], extractor.outputs[o], dtype=torch.float64),
            0,
        )
        for o in needs
    }
    kept: dict[str, list[torch.Tensor]] = {o: [] for o, keep in needs.items() if keep}
    net = extractor.net.to(device).eval()
    with torch.no_grad(), progress_bar(total=num_images, desc=f"real stats ({extractor.name})", unit="img") as bar:
        for images in batches:
            outputs = net(to_metric_input(real_to_uint8(images), extractor.rgb, device))
            for o, s in stats.items():
                feats = outputs[o].double().cpu()
                s.feature_sum += feats.sum(0)
                s.feature_cov_sum += feats.T @ feats
                s.count += len(feats)
                if o in kept:
                    kept[o].append(feats.float())
            bar.update(len(images))
    for o, parts in kept.items():
        stats[o].features = torch.cat(parts)
    return stats


def save_real_stats(cache_dir: str | Path, key: dict[str, Any], stats: dict[str, RealStats]) -> None:
    """Write each entry unless it already exists (then the existing one is kept, unchanged)."""
    for output, s in stats.items():
        k = _key_text({**key, "output": output})
        entry = {"key": k, "feature_sum": s.feature_sum, "feature_cov_sum": s.feature_cov_sum, "count": s.count}
        write_once(cache_path(cache_dir, key, output), lambda tmp, e=entry: torch.save(e, tmp))
        if s.features is not None:
            features = {"key": k, "features": s.features}
            write_once(cache_path(cache_dir, key, output, features=True), lambda tmp, f=features: torch.save(f, tmp))


def real_image_batches(
    data: Any, count: int | None, batch_size: int, rank: int = 0, world_size: int = 1
) -> tuple[int, Iterator[torch.Tensor]]:
    """(number of real images used, iterator over this process's (B, C, H, W) [-1, 1] batches).

    The first ``count`` images in the dataset's order are used (all when None); process ``rank``
    of ``world_size`` reads images ``rank, rank + world_size, ...`` of them. The bundled digits
    expose ``real_images()``; folder datasets expose ``make_dataset`` (centre crop, no flip).
    """
    if hasattr(data, "real_images"):
        images, _ = data.real_images()
        n = len(images) if count is None else min(int(count), len(images))
        mine = images[:n][rank::world_size]
        return n, (mine[i : i + batch_size] for i in range(0, len(mine), batch_size))
    if hasattr(data, "make_dataset"):
        dataset = data.make_dataset(random_flip=False, substitute=False)
        n = len(dataset) if count is None else min(int(count), len(dataset))
        mine = list(range(rank, n, world_size))

        def gen() -> Iterator[torch.Tensor]:
            for i in range(0, len(mine), batch_size):
                images = []
                for j in mine[i : i + batch_size]:
                    x, _, _, bad_path, reason = dataset[j]
                    if bad_path:  # stops the run naming the file, or (skip_corrupt) counts and skips it
                        data.corrupt.report(bad_path, reason)
                        continue
                    images.append(x)
                if images:
                    yield torch.stack(images)

        return n, gen()
    raise DitlabError(
        f"data={getattr(data, 'name', '?')} provides no real images to compare samples with (a latent cache holds "
        "none); evaluate on image data (data=digits or data=imagefolder) or set eval=none"
    )


def merge_shards(parts: list[dict[str, RealStats]]) -> dict[str, RealStats]:
    """Statistics of interleaved shards (process r held images r, r + W, ...) -> those of all images,
    features back in dataset order."""
    merged = {}
    for output in parts[0]:
        ps = [p[output] for p in parts]
        total = RealStats(sum(p.feature_sum for p in ps), sum(p.feature_cov_sum for p in ps), sum(p.count for p in ps))
        if ps[0].features is not None:
            full = torch.empty(total.count, ps[0].features.shape[1], dtype=ps[0].features.dtype)
            for r, p in enumerate(ps):
                full[r :: len(ps)] = p.features
            total.features = full
        merged[output] = total
    return merged


# ----------------------------------------------------------------------------- files
def _load_checked(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    entry = load_weights(path, "delete it; the statistics are computed and cached again")
    stored = json.loads(entry.get("key", "{}"))
    if stored != json.loads(_key_text(key)):
        raise DitlabError(
            f"the real-statistics cache {path} was made for a different setting; move it away or point "
            "paths.cache_dir (DITLAB_CACHE) at another folder"
        )
    return entry


def _key_text(key: dict[str, Any]) -> str:
    """The canonical JSON of a cache key: hashed into the file name and stored in the file."""
    return json.dumps(key, sort_keys=True, default=str)
