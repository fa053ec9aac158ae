"""``manifest.json`` of a latent cache: what was encoded, how, and what each shard holds.

Layout of a cache directory::

    manifest.json                     this file (``complete: false`` until every shard exists)
    shards/shard-00000.safetensors    source items [first_index, end_index) of the sorted listing
    shards/shard-00001.safetensors    ...
    shards/repa-00000.safetensors     with ``aux=repa``: the REPA encoder's features, rows as in shard 00000
    logs/                             ditlab-extract's logs, one per process

Each shard holds, for its readable images, the encoder's *unscaled* posterior mean and std of the
image and of its horizontal flip (``mean``, ``std``, ``mean_flip``, ``std_flip``; no std for a
deterministic encoder), the class id (``label``) and the position in the source listing
(``index``). Training picks a flip and draws the posterior sample every step, then scales, so the
cache keeps both augmentations of DiT's loop and does not depend on the scaling factor.

Extracted with ``aux=repa``, the cache also holds the frozen REPA encoder's output for each image and
its flip (``feat``, ``feat_flip``, plus ``index``), in one feature file per latent shard; the manifest's
``repa_features`` records which encoder and preprocessing made them (:func:`feature_spec`) and whether
every feature file exists (``complete``; the latents stay usable while features are being added).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ditlab.atomic import replace_atomically
from ditlab.errors import DitlabError

FORMAT = "ditlab-latents/1"
MANIFEST = "manifest.json"
# What identifies the encoder a cache was made with (scale/shift are applied at train time).
ENCODER_IDENTITY = ("name", "path", "vae_class", "subfolder")
# Keys that must agree for an extraction to resume into an existing cache.
PLAN_KEYS = ("format", "source", "resolution", "channels", "latent_shape", "dtype", "fields", "shard_size")


def shard_file(k: int) -> str:
    return f"shards/shard-{k:05d}.safetensors"


def feature_file(k: int) -> str:
    return f"shards/repa-{k:05d}.safetensors"


# What identifies the REPA targets stored in a cache (ditlab.auxloss.targets.target_identity): the option of each.
FEATURE_IDENTITY = {
    "encoder": "aux.encoder",
    "resolution": "aux.encoder_resolution",
    "preprocess": "aux.encoder_preprocess",
}


def feature_spec(identity: dict[str, Any], shape: tuple[int, ...], dtype: str) -> dict[str, Any]:
    dims = ", ".join(str(d) for d in shape)
    return {
        **{k: identity[k] for k in FEATURE_IDENTITY},
        "shape": list(shape),
        "dtype": dtype,
        "fields": {
            "feat": f"(n, {dims}) {dtype}: the REPA encoder's output for the image (eval mode, no gradients)",
            "feat_flip": f"(n, {dims}) {dtype}: its output for the horizontally flipped image",
            "index": "(n,) int64: position in the source listing (the rows of the latent shard of the same number)",
        },
        "complete": False,
    }


def feature_differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [
        f"{option}: cache has {_short(have.get(k))}, requested {_short(want.get(k))}"
        for k, option in FEATURE_IDENTITY.items()
        if have.get(k) != want.get(k)
    ]


def feature_options(spec: dict[str, Any]) -> str:
    """The command-line options that make (or match) these features, e.g. ``aux=repa aux.encoder=digits ...``."""
    values = " ".join(
        f"{option}={v if isinstance(v := spec[k], str) else json.dumps(v)}" for k, option in FEATURE_IDENTITY.items()
    )
    return "aux=repa " + values


def make_plan(
    source: dict[str, Any],
    resolution: int,
    channels: int,
    encoder: dict[str, Any],
    latent_shape: tuple[int, int, int],
    dtype: str,
    has_std: bool,
    shard_size: int,
) -> dict[str, Any]:
    n = int(source["num_images"])
    c, h, w = latent_shape
    latent = f"(n, {c}, {h}, {w}) {dtype}"
    fields = {"mean": f"{latent}: posterior mean of the image (unscaled)"}
    if has_std:
        fields["std"] = f"{latent}: posterior std of the image"
    fields["mean_flip"] = f"{latent}: posterior mean of the horizontally flipped image"
    if has_std:
        fields["std_flip"] = f"{latent}: posterior std of the flipped image"
    fields["label"] = "(n,) int64: class id (sorted class-folder position)"
    fields["index"] = "(n,) int64: position of the image in the sorted source listing"
    return {
        "format": FORMAT,
        "source": source,
        "resolution": int(resolution),
        "channels": int(channels),
        "encoder": encoder,
        "scaling_factor": encoder.get("scaling_factor"),
        "shift_factor": encoder.get("shift_factor"),
        "latent_shape": [c, h, w],
        "dtype": dtype,
        "has_std": has_std,
        "stored": "unscaled posterior mean/std of each image and of its flip; training draws flip and sample",
        "fields": fields,
        "shard_size": int(shard_size),
        "shards": [
            {"file": shard_file(k), "first_index": start, "end_index": min(start + shard_size, n)}
            for k, start in enumerate(range(0, n, shard_size))
        ],
        "complete": False,
    }


def read_manifest(cache_dir: Path) -> dict[str, Any] | None:
    path = cache_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DitlabError(f"{path} is not valid JSON ({e}); delete the cache directory and extract again") from None
    if manifest.get("format") != FORMAT:
        raise DitlabError(f"{path} is not a {FORMAT} manifest (format: {manifest.get('format')})")
    return manifest


def write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomic: readers (and other extraction processes) never see a half-written file."""
    text = json.dumps(manifest, indent=2) + "\n"
    replace_atomically(cache_dir / MANIFEST, lambda tmp: tmp.write_text(text))


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(have: dict[str, Any], want: dict[str, Any], keys, prefix: str = "") -> list[str]:
    """``key: cache has A, requested B`` for every key whose values differ (nested dicts compared per key)."""
    out = []
    for key in keys:
        a, b = have.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, sorted(set(a) | set(b)), f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: cache has {_short(a)}, requested {_short(b)}")
    return out


def plan_differences(existing: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    enc = differences(existing["encoder"], plan["encoder"], ENCODER_IDENTITY, "encoder.")
    return enc + differences(existing, plan, PLAN_KEYS)


def encoder_differences(manifest: dict[str, Any], encoder: dict[str, Any]) -> list[str]:
    return differences(manifest["encoder"], encoder, ENCODER_IDENTITY, "encoder.")
