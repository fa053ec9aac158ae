"""``ditlab-extract``: encode an image dataset once into a latent cache.

Work is split by shard: process ``rank`` of ``world_size`` encodes shards ``rank, rank +
world_size, ...``, so processes never write the same file. Finished shards are kept, so rerunning
the same command after an interruption resumes; the process that finds every shard present marks
the manifest complete. Each batch is encoded together with its flip (one forward pass of 2B images).
With ``aux=repa`` the REPA encoder's features of the same 2B images are stored too (:mod:`ditlab.latent_cache.features`);
rerun on a finished cache, it adds them without encoding the latents again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Subset

from ditlab import progress
from ditlab.atomic import remove_temporaries
from ditlab.auxloss.targets import FrozenTarget, build_target, target_identity
from ditlab.build import build_data, build_encoder
from ditlab.devices import resolve_device
from ditlab.errors import DitlabError
from ditlab.latent_cache import features as feats
from ditlab.latent_cache import manifest as mf
from ditlab.latent_cache.shards import shard_meta, write_shard

log = logging.getLogger("ditlab")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
LOG_DIR = "logs"


def extract(cfg: DictConfig) -> dict[str, Any]:
    """Encode this process's shards; returns the manifest (``complete`` once every shard exists)."""
    with progress.enabled_if(cfg.get("progress", True)):
        return _extract(cfg)


def _extract(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "cache_dir"):
        raise DitlabError("cache_dir is not set: pass the directory for the cache, e.g. cache_dir=/data/latents/in256")
    rank, world = int(cfg.rank), int(cfg.world_size)
    _validate(cfg, rank, world)
    cache_dir = Path(str(cfg.cache_dir)).expanduser().resolve()
    data = build_data(cfg.data)
    if not hasattr(data, "make_dataset"):
        raise DitlabError(f"data={data.name} cannot be extracted; use data=imagefolder data.root=<folder>")
    encoder = build_encoder(cfg.encoder)
    channels, side = encoder.latent_shape(data.channels, data.resolution)
    dataset = data.make_dataset(random_flip=False, substitute=False)
    device = resolve_device(str(cfg.device))
    encoder.to(device)
    _, probe_std = encoder.posterior(torch.zeros(1, data.channels, data.resolution, data.resolution, device=device))
    target, feature_plan = _feature_target(cfg, data, device)  # (None, None) without aux=repa
    plan = mf.make_plan(
        _source(data, dataset),
        data.resolution,
        data.channels,
        encoder.describe(),
        (channels, side, side),
        str(cfg.dtype),
        probe_std is not None,
        int(cfg.shard_size),
    )
    manifest = _open_cache(cache_dir, plan, feature_plan)
    if manifest.get("complete"):
        manifest, finished = _reopen_complete(cache_dir, plan, manifest, target)
        if finished:
            return manifest

    mine = [k for k in range(len(plan["shards"])) if k % world == rank]
    log.info(
        "process %d/%d: %d of %d shards, %d images, encoder %s%s on %s",
        rank,
        world,
        len(mine),
        len(plan["shards"]),
        len(dataset),
        encoder.describe().get("path", encoder.name),
        f", REPA features of {target.name}" if target is not None else "",
        device,
    )
    my_images = sum(plan["shards"][k]["end_index"] - plan["shards"][k]["first_index"] for k in mine)
    with progress.bar(total=my_images, desc=f"extract (rank {rank})", unit="img") as bar:
        for k in mine:
            _extract_shard(cfg, data, encoder, target, dataset, plan["shards"][k], k, cache_dir, device, bar)
    return finalize(cache_dir, manifest)


def _source(data: Any, dataset: Any) -> dict[str, Any]:
    """What the cache was extracted from, as its manifest records it (a changed listing is another cache)."""
    return {
        "dataset": data.name,
        "root": str(data.root),
        "num_images": len(dataset),
        "num_classes": len(dataset.classes),
        "classes": list(dataset.classes),
        "listing_sha256": _listing_hash(dataset.samples, data.root),
        "crop": "adm_center",
    }


def _reopen_complete(
    cache_dir: Path, plan: dict[str, Any], manifest: dict[str, Any], target: Any
) -> tuple[dict[str, Any], bool]:
    """A complete cache: (its manifest, True) if nothing is missing, else the manifest marked incomplete again."""
    damaged = [s["file"] for s in plan["shards"] if shard_meta(cache_dir / s["file"]) is None]
    features_missing = target is not None and not (
        manifest["repa_features"]["complete"] and feats.all_present(cache_dir, manifest)
    )
    if not damaged and not features_missing:
        log.info("the cache %s is already complete (%d latents); nothing to do", cache_dir, manifest["num_latents"])
        return manifest, True
    if damaged:
        log.warning("%d damaged shard(s) in %s (first: %s): extracting them again", len(damaged), cache_dir, damaged[0])
        manifest = {**plan, "repa_features": manifest.get("repa_features")}
        mf.write_manifest(cache_dir, manifest)  # incomplete until they are redone: no run trains on it meanwhile
    elif manifest["repa_features"]["complete"]:  # a feature file went missing or was damaged
        log.warning("REPA feature files missing or damaged in %s: extracting them again", cache_dir)
        manifest = {**manifest, "repa_features": {**manifest["repa_features"], "complete": False}}
        mf.write_manifest(cache_dir, manifest)
    return manifest, False


def _extract_shard(
    cfg: DictConfig,
    data: Any,
    encoder: Any,
    target: Any,
    dataset: Any,
    spec: dict[str, Any],
    k: int,
    cache_dir: Path,
    device: torch.device,
    bar: Any,
) -> None:
    """Shard ``k``: kept if finished earlier, its REPA features added if only they are missing, else encoded."""
    path, feature_path = cache_dir / spec["file"], cache_dir / mf.feature_file(k)
    done = shard_meta(path)
    latents_done = done is not None and (done["first_index"], done["end_index"]) == (
        spec["first_index"],
        spec["end_index"],
    )
    features_done = target is None or (latents_done and feats.features_match(feature_path, done))
    if latents_done and features_done:
        log.info("shard %d: kept (finished earlier)", k)
        bar.update(spec["end_index"] - spec["first_index"])
        return
    t0 = time.time()
    if latents_done:  # only the features are missing: the rows the latent shard holds, in its order
        indices = load_file(path)["index"].tolist()
        _, features, meta = _encode_shard(cfg, data, None, target, dataset, indices, spec, device, bar)
        if meta["skipped"]:
            raise DitlabError(
                f"{meta['skipped'][0]} became unreadable after its latents were extracted; "
                "restore it, or extract the cache again into a new cache_dir"
            )
        bar.update(spec["end_index"] - spec["first_index"] - len(indices))
    else:
        indices = list(range(spec["first_index"], spec["end_index"]))
        tensors, features, meta = _encode_shard(cfg, data, encoder, target, dataset, indices, spec, device, bar)
    if target is not None:  # before the latent shard: a finished latent shard never lacks its features
        remove_temporaries(feature_path)
        write_shard(feature_path, features, meta)
    if not latents_done:
        remove_temporaries(path)
        write_shard(path, tensors, meta)
    log.info(
        "shard %d: %d images in %.1f s%s%s",
        k,
        meta["count"],
        time.time() - t0,
        " (REPA features only)" if latents_done else "",
        f", {len(meta['skipped'])} unreadable skipped" if meta["skipped"] else "",
    )


def finalize(cache_dir: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Mark the manifest complete when every shard exists (run by whichever process sees that)."""
    metas = [shard_meta(cache_dir / s["file"]) for s in plan["shards"]]
    missing = sum(m is None for m in metas)
    if missing:
        log.info(
            "%d of %d shards still missing (other processes); the last one to finish completes the manifest",
            missing,
            len(metas),
        )
        return plan
    manifest = {
        **plan,
        "shards": [{**s, "count": m["count"], "skipped": m["skipped"]} for s, m in zip(plan["shards"], metas)],
    }
    manifest["num_latents"] = sum(m["count"] for m in metas)
    manifest["skipped_corrupt"] = sum(len(m["skipped"]) for m in metas)
    manifest["complete"] = True
    if manifest.get("repa_features") is not None:
        manifest["repa_features"] = {**manifest["repa_features"], "complete": feats.all_present(cache_dir, manifest)}
    mf.write_manifest(cache_dir, manifest)
    log.info(
        "cache complete: %s (%d latents, %d unreadable images skipped%s)",
        cache_dir,
        manifest["num_latents"],
        manifest["skipped_corrupt"],
        feats.status(manifest),
    )
    return manifest


def _encode_shard(cfg, data, encoder, target, dataset, indices, spec, device, bar):
    """(latent tensors, REPA feature tensors, shard meta) of the readable images among ``indices``;
    ``encoder`` or ``target`` None: that part is not computed."""
    dtype = DTYPES[str(cfg.dtype)]
    loader = DataLoader(Subset(dataset, indices), batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers))
    parts: dict[str, list[torch.Tensor]] = {}
    features: dict[str, list[torch.Tensor]] = {}
    skipped: list[str] = []
    for x, label, index, bad_paths, reasons in loader:
        for path, reason in zip(bad_paths, reasons):
            if path:
                data.corrupt.report(path, reason)  # stops here unless data.skip_corrupt=true
                skipped.append(path)
        keep = torch.tensor([not p for p in bad_paths], dtype=torch.bool)
        x, label, index = x[keep], label[keep], index[keep]
        if len(x) == 0:
            bar.update(len(bad_paths))
            continue
        n = len(x)
        both = torch.cat([x, x.flip(-1)]).to(device)  # (2n, C, R, R): each image and its flip
        if encoder is not None:
            mean, std = encoder.posterior(both)  # (2n, C, h, w)
            fields = {"mean": mean[:n], "mean_flip": mean[n:]}
            if std is not None:
                fields.update(std=std[:n], std_flip=std[n:])
            for name, value in fields.items():
                parts.setdefault(name, []).append(value.to(dtype).cpu())
            parts.setdefault("label", []).append(label.long())
            parts.setdefault("index", []).append(index.long())
        if target is not None:
            for name, value in feats.encode(target, both, n).items():
                features.setdefault(name, []).append(value.to(dtype).cpu())
            features.setdefault("index", []).append(index.long())
        bar.update(len(bad_paths))
    tensors = {name: torch.cat(values) for name, values in parts.items()}
    feature_tensors = {name: torch.cat(values) for name, values in features.items()}
    count = len(next(iter(tensors.values()), next(iter(feature_tensors.values()), ())))
    meta = {"first_index": spec["first_index"], "end_index": spec["end_index"], "count": count, "skipped": skipped}
    return tensors, feature_tensors, meta


def _feature_target(cfg: DictConfig, data: Any, device: torch.device) -> tuple[FrozenTarget | None, dict | None]:
    """The frozen REPA encoder of ``cfg.aux`` and the manifest entry for its features; (None, None) without aux."""
    aux = cfg.get("aux")
    if aux is None or aux.name == "none":
        return None, None
    if aux.name != "repa":
        raise DitlabError(f"ditlab-extract stores encoder features for aux=repa only, not aux={aux.name}; use aux=repa")
    resolution, preprocess = aux.get("encoder_resolution"), aux.get("encoder_preprocess")
    identity = target_identity(str(aux.encoder), resolution, preprocess)
    target = build_target(str(aux.encoder), resolution, preprocess, str(aux.cache_dir), data.resolution)
    try:
        probe = target(torch.zeros(1, data.channels, data.resolution, data.resolution, device=device))
    except RuntimeError as e:  # e.g. an encoder made for grey digits given RGB images
        raise DitlabError(
            f"the REPA encoder aux.encoder={aux.encoder} cannot take this data's {data.channels}x{data.resolution}"
            f"x{data.resolution} images ({str(e).splitlines()[0][:160]}); choose an encoder made for them"
        ) from None
    return target, mf.feature_spec(identity, tuple(probe.shape[1:]), str(cfg.dtype))


def _open_cache(cache_dir: Path, plan: dict[str, Any], features: dict[str, Any] | None) -> dict[str, Any]:
    """The existing manifest if it describes the same extraction; a new plan in an empty directory.
    ``features`` (aux=repa) are added to a cache without them; other encoders' features are refused."""
    existing = mf.read_manifest(cache_dir)
    if existing is not None:
        diffs = mf.plan_differences(existing, plan)
        if diffs:
            raise DitlabError(
                f"cache_dir={cache_dir} holds a different cache ({'; '.join(diffs)}); choose another cache_dir, "
                "or delete that one to replace it"
            )
        have = existing.get("repa_features")
        feats.check_same(cache_dir, have, features)
        if existing.get("complete"):
            if features is None or have is not None:
                return existing
            manifest = {**existing, "repa_features": features}  # adding features: the latents stay usable
            mf.write_manifest(cache_dir, manifest)
            return manifest
        features = features or have
    elif cache_dir.exists() and any(p.name != LOG_DIR for p in cache_dir.iterdir()):
        raise DitlabError(
            f"cache_dir={cache_dir} is not empty and holds no {mf.MANIFEST}; choose a new or empty directory"
        )
    (cache_dir / "shards").mkdir(parents=True, exist_ok=True)
    manifest = {**plan, "repa_features": features}
    mf.write_manifest(cache_dir, manifest)  # every process writes the same plan
    return manifest


def _listing_hash(samples: list[tuple[str, int]], root: Path) -> str:
    """Fingerprint of the sorted (relative path, label) listing: a changed folder cannot resume a cache."""
    h = hashlib.sha256()
    for path, label in samples:
        h.update(f"{os.path.relpath(path, root)}\t{label}\n".encode())
    return h.hexdigest()


def _validate(cfg: DictConfig, rank: int, world: int) -> None:
    if world < 1 or not 0 <= rank < world:
        raise DitlabError(f"rank={rank} must be in [0, world_size) with world_size={world} >= 1")
    if int(cfg.shard_size) <= 0 or int(cfg.batch_size) <= 0:
        raise DitlabError("shard_size and batch_size must be positive")
    if str(cfg.dtype) not in DTYPES:
        raise DitlabError(f"dtype={cfg.dtype} is not one of {', '.join(DTYPES)}")
