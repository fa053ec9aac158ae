"""A latent cache made by ``ditlab-extract`` (layout in :mod:`ditlab.latent_cache.manifest`).

Batches hold cached posteriors, not images; :meth:`adapt_encoder` checks the cache against the
run's encoder and returns the encoder that turns them into latents (a posterior sample and the
scaling, every step), so the training loop, checkpoints and samples are those of an image run.
With ``aux=repa``, REPA calls :meth:`cached_features`: batches then also carry the REPA encoder's
stored features of the same image or flip, ``(x, label, feat)``, and no encoder runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ditlab.data.base import DATASETS, ImageDataModule
from ditlab.data.imagefolder import resolve_num_classes
from ditlab.data.sharding import sharded_train_loader
from ditlab.encoders.base import LatentEncoder
from ditlab.encoders.cached import CachedPosteriorEncoder
from ditlab.errors import DitlabError
from ditlab.inputs import is_pickle, python_objects
from ditlab.latent_cache.features import training_check
from ditlab.latent_cache.manifest import MANIFEST, encoder_differences, read_manifest
from ditlab.latent_cache.shards import LatentCacheDataset, shard_meta

log = logging.getLogger("ditlab")


@DATASETS.register("latents")
class LatentsDataModule(ImageDataModule):
    name = "latents"

    def __init__(
        self,
        cache_dir: str,
        resolution: int | None = None,
        batch_size: int = 256,
        num_workers: int = 2,
        random_flip: bool = True,
        num_classes: int | None = None,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers)
        if cache_dir in (None, "", "???"):
            raise DitlabError("data.cache_dir is not set: pass the cache_dir of a ditlab-extract run")
        self.cache_dir = Path(str(cache_dir)).expanduser().resolve()
        manifest = read_manifest(self.cache_dir)
        if manifest is None:
            raise DitlabError(
                f"data.cache_dir={cache_dir} holds no {MANIFEST}; create the cache first with "
                f"ditlab-extract data.root=<image folder> cache_dir={cache_dir}"
            )
        if not manifest.get("complete"):
            raise DitlabError(
                f"the latent cache {self.cache_dir} is incomplete (an extraction is running or was interrupted); "
                "rerun the same ditlab-extract command to finish it"
            )
        if resolution is not None and int(resolution) != manifest["resolution"]:
            raise DitlabError(
                f"data.resolution={resolution} but the cache {self.cache_dir} holds {manifest['resolution']}px images; "
                f"set data.resolution={manifest['resolution']} (or null) or extract a cache at {resolution}px"
            )
        shards = [self.cache_dir / s["file"] for s in manifest["shards"]]
        pickled = next((p for p in shards if p.is_file() and is_pickle(p)), None)
        if pickled is not None:  # never "damaged": safetensors holds no objects, so someone put this here
            raise python_objects(
                pickled, "", "a latent shard is a safetensors file: move it away and rerun ditlab-extract"
            )
        damaged = next((s["file"] for s in manifest["shards"] if shard_meta(self.cache_dir / s["file"]) is None), None)
        if damaged is not None:
            raise DitlabError(
                f"the latent cache {self.cache_dir} has a damaged shard ({damaged}: missing, truncated or unreadable); "
                "rerun the same ditlab-extract command, which extracts damaged shards again"
            )
        self.manifest = manifest
        self.resolution = int(manifest["resolution"])
        self.channels = int(manifest["channels"])
        self.num_classes = resolve_num_classes(
            num_classes, int(manifest["source"]["num_classes"]), f"the cache {self.cache_dir}"
        )
        self.random_flip = bool(random_flip)
        self.seed = int(seed)
        self.dataset: LatentCacheDataset | None = None
        self.features: dict[str, Any] | None = None  # the REPA features batches carry (cached_features)

    def adapt_encoder(self, encoder: LatentEncoder) -> LatentEncoder:
        wanted = encoder.describe()
        diffs = encoder_differences(self.manifest, wanted)
        if diffs:
            raise DitlabError(
                f"the latent cache {self.cache_dir} was made with another encoder ({'; '.join(diffs)}); "
                "pass the encoder options it was extracted with, or extract a new cache"
            )
        if wanted.get("scaling_factor") != self.manifest["scaling_factor"]:
            log.info(
                "the cache was extracted with scaling factor %s; this run scales by %s (the cache is unscaled)",
                self.manifest["scaling_factor"],
                wanted.get("scaling_factor"),
            )
        return CachedPosteriorEncoder(encoder, has_std=bool(self.manifest["has_std"]))

    def cached_features(self, identity: dict[str, Any]) -> list[int]:
        """Batches carry the stored REPA features made as ``identity`` asks (refused in one line when the
        cache holds none, another encoder's, or an unfinished set); returns one feature's shape."""
        shape = training_check(self.cache_dir, self.manifest, identity)
        self.features = dict(identity)
        self.dataset = None
        return shape

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = LatentCacheDataset(
                self.cache_dir, self.manifest, self.random_flip, features=self.features is not None
            )

    def train_dataloader(self):
        self.setup()
        return sharded_train_loader(self.dataset, self, self.seed)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "cache_dir": str(self.cache_dir),
            "num_latents": int(self.manifest["num_latents"]),
            "source_root": self.manifest["source"].get("root"),
            "random_flip": self.random_flip,
            "repa_features": self.features,  # None: batches carry no stored encoder features
        }
