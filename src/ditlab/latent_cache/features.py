"""REPA targets in a latent cache: ``ditlab-extract ... aux=repa`` stores the frozen encoder's features.

The encoder (built by ``ditlab-extract`` from the same ``aux.encoder*`` options as training)
sees exactly the images the latents were encoded from, each and its flip, in eval mode without
gradients. Its raw output (tokens, feature map or vector) is stored per image, so a run pools it to
its own DiT token grid as the live encoder's output would be. Feature files sit beside the latent
shards, one per shard with the same rows, written atomically; the manifest's ``repa_features``
names the encoder and preprocessing, which a training run compares with its ``aux`` options.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ditlab.errors import DitlabError
from ditlab.latent_cache import manifest as mf
from ditlab.latent_cache.shards import shard_meta


def encode(target: Callable[[torch.Tensor], torch.Tensor], both: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """``both`` = cat([images, flipped images]) -> the stored fields ``feat`` and ``feat_flip``."""
    out = target(both)
    return {"feat": out[:n], "feat_flip": out[n:]}


def features_match(path: Path, latent_meta: dict[str, Any] | None) -> bool:
    """A finished feature file holding the rows of the latent shard described by ``latent_meta``."""
    meta = shard_meta(path)
    keys = ("first_index", "end_index", "count")
    return meta is not None and latent_meta is not None and all(meta[k] == latent_meta[k] for k in keys)


def all_present(cache_dir: Path, manifest: dict[str, Any]) -> bool:
    """Every latent shard of a complete manifest has its finished feature file."""
    return all(features_match(cache_dir / mf.feature_file(k), s) for k, s in enumerate(manifest["shards"]))


def extract_command(cache_dir: Path, manifest: dict[str, Any]) -> str:
    """The ``ditlab-extract`` command that reopens this cache (same source, encoder, dtype and shards)."""
    enc = manifest["encoder"]
    encoder = [f"encoder={enc['name']}"] + [
        f"encoder.{k}={enc[k]}" for k in ("path", "vae_class", "subfolder") if enc.get(k) is not None
    ]
    return " ".join(
        [
            "ditlab-extract",
            f"data.root={manifest['source'].get('root')}",
            f"data.resolution={manifest['resolution']}",
            *encoder,
            f"cache_dir={cache_dir}",
            f"dtype={manifest['dtype']}",
            f"shard_size={manifest['shard_size']}",
        ]
    )


def check_same(cache_dir: Path, have: dict[str, Any] | None, want: dict[str, Any] | None) -> None:
    """Refuse to mix two encoders' features in one cache (a run would read targets it did not ask for)."""
    if have is None or want is None:
        return
    diffs = mf.feature_differences(have, want) + (
        [f"feature shape: cache has {have['shape']}, this encoder gives {want['shape']}"]
        if have["shape"] != want["shape"]
        else []
    )
    if diffs:
        raise DitlabError(
            f"cache_dir={cache_dir} holds REPA features of another encoder ({'; '.join(diffs)}); "
            f"rerun with {mf.feature_options(have)}, or extract into a new cache_dir"
        )


def status(manifest: dict[str, Any]) -> str:
    spec = manifest.get("repa_features")
    if spec is None:
        return ""
    return f"; REPA features of {spec['encoder']} {'complete' if spec['complete'] else 'INCOMPLETE'}"


def training_check(cache_dir: Path, manifest: dict[str, Any], identity: dict[str, Any]) -> list[int]:
    """The stored feature shape if the cache holds complete features made as ``identity`` asks; else one line."""
    spec = manifest.get("repa_features")
    command = f"{extract_command(cache_dir, manifest)} {mf.feature_options(identity)}"
    if spec is None:
        raise DitlabError(f"the latent cache {cache_dir} holds no REPA encoder features; add them with: {command}")
    diffs = mf.feature_differences(spec, identity)
    if diffs:
        raise DitlabError(
            f"the latent cache {cache_dir} holds REPA features of another encoder ({'; '.join(diffs)}); "
            f"train with {mf.feature_options(spec)}, or extract this encoder's features into a new cache_dir"
        )
    if not spec.get("complete") or not all_present(cache_dir, manifest):
        raise DitlabError(
            f"the latent cache {cache_dir} has missing or damaged REPA feature files (an extraction is running, "
            f"was interrupted or a file was damaged); finish them with: {command}"
        )
    return list(spec["shape"])
