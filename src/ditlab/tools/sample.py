"""``ditlab-sample``: samples from a checkpoint -> ``samples.npz`` + ``grid.png`` + ``samples.json``.

    ditlab-sample ckpt=runs/<run> sampler=dpm_solver sampler.steps=10 num_samples=1000
    ditlab-sample official=DiT-XL-2-256x256.pt name=DiT-XL/2 image_size=256 encoder=sd_vae

Samples stream batch by batch into the ``.npz`` (ADM evaluator layout), so ``num_samples=50000``
needs the memory of one batch. The JSON holds the full recipe (sampler, steps, NFE, CFG scale,
channels and interval, encoder, precision, count, seed, checkpoint), so every metric computed
from the archive can name how its samples were made. Existing outputs are never replaced unless
``overwrite=true``; a batch with NaN/Inf stops the run and nothing is written.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ditlab import progress
from ditlab.build import build_sampler
from ditlab.checkpoints.disk_space import SLACK_BYTES, check_free_space
from ditlab.cli import _hydra_entry
from ditlab.config import compose
from ditlab.devices import AUTOCAST_DTYPES, autocast, resolve_device
from ditlab.errors import DitlabError
from ditlab.inputs import check_writable
from ditlab.run_names import options_hash
from ditlab.samplers.generate import SampleRecipe, class_balanced_labels, generate
from ditlab.samplers.grid import label_grid, save_grid
from ditlab.tools.npz_writer import StreamingNpzWriter
from ditlab.tools.sample_source import SampleSource, load_ditlab, load_official

log = logging.getLogger("ditlab")
OUTPUTS = {"npz": "samples.npz", "grid": "grid.png", "recipe": "samples.json"}


def sample(cfg: DictConfig) -> dict[str, Any]:
    """Run ``ditlab-sample`` on a composed ``conf/sample.yaml``; returns the recipe written to JSON."""
    with progress.enabled_if(cfg.get("progress", True)):
        return _sample(cfg)


def _sample(cfg: DictConfig) -> dict[str, Any]:
    _validate(cfg)
    source = load_source(cfg)
    chosen_sampler = sampler_config(cfg.get("sampler"), source.default_sampler)
    sampler = build_sampler(chosen_sampler)
    sampler.check(source.objective)
    labels = choose_labels(cfg.labels, source.num_classes, int(cfg.num_samples))
    guidance = OmegaConf.to_container(cfg.guidance, resolve=True)
    out_dir, paths = _output_paths(cfg, source, sampler, chosen_sampler)
    device = resolve_device(str(cfg.device))
    model = source.model.to(device)
    source.encoder.to(device)
    t0 = time.time()
    nfe, image_shape = _write_samples(cfg, model, source, sampler, labels, guidance, device, paths)
    recipe = SampleRecipe(
        sampler=sampler.describe(),
        guidance=guidance,
        encoder=source.encoder.describe(),
        num_samples=len(labels),
        seed=int(cfg.seed),
        nfe=nfe,
        weights=source.info.get("weights", "ema"),
        extra={
            "precision": cfg.precision,
            "batch_size": int(cfg.batch_size),
            "labels": "class_balanced" if cfg.labels is None else list(cfg.labels),
            "device": str(device),
            **{k: v for k, v in source.info.items() if k != "weights"},
            "image_shape": image_shape,
            "outputs": {k: str(p) for k, p in paths.items()},
            "sample_seconds": round(time.time() - t0, 2),
        },
    ).as_dict()
    paths["recipe"].write_text(json.dumps(recipe, indent=2) + "\n")
    log.info("wrote %s (%d samples, %d NFE each)", out_dir, len(labels), nfe)
    return recipe


def _output_paths(
    cfg: DictConfig, source: SampleSource, sampler: Any, chosen_sampler: Any
) -> tuple[Path, dict[str, Path]]:
    """The output folder and files, checked before sampling (a read-only or occupied folder is refused now)."""
    out_dir = (
        Path(cfg.out)
        if cfg.out
        else source.default_out.parent
        / f"{source.default_out.name}_{recipe_tag(cfg, sampler, chosen_sampler, source.default_sampler)}"
    )
    check_writable(out_dir, "out")  # a read-only folder is found now, not after sampling
    paths = {key: out_dir / name for key, name in OUTPUTS.items()}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not cfg.overwrite:
        raise DitlabError(f"{existing[0]} already exists; choose another out=... or pass overwrite=true to replace it")
    return out_dir, paths


def _write_samples(
    cfg: DictConfig,
    model: torch.nn.Module,
    source: SampleSource,
    sampler: Any,
    labels: torch.Tensor,
    guidance: Any,
    device: torch.device,
    paths: dict[str, Path],
) -> tuple[int, list[int] | None]:
    """Sample every label into ``samples.npz`` and the grid; returns the NFE per sample and the image shape."""
    out_dir = paths["npz"].parent
    writer, nfe, image_shape = None, 0, None
    try:
        with autocast(cfg.precision, device):
            for images, y, nfe in generate(  # noqa: B007 (nfe: the last batch's count, read after the loop)
                model,
                source.objective,
                sampler,
                source.encoder,
                labels,
                source.latent_shape,
                guidance,
                batch_size=int(cfg.batch_size),
                seed=int(cfg.seed),
                num_classes=source.num_classes,
                device=device,
                progress="sampling",
            ):
                if writer is None:  # opened on the first good batch: a refused run leaves no files
                    needed = len(labels) * images[0].nbytes + SLACK_BYTES  # the npz (uint8), then the grid
                    check_free_space(out_dir, needed, f"{len(labels)} samples", "free space or choose another out=...")
                    out_dir.mkdir(parents=True, exist_ok=True)
                    image_shape = list(images.shape[1:])
                    writer = StreamingNpzWriter(paths["npz"], len(labels), images.shape[1:])
                writer.write(images, y)
                if not progress.enabled():  # batch logs: a line per batch instead of the bar
                    log.info("sampled %d / %d", writer.count, len(labels))
        save_grid(
            label_grid(
                writer.images(), labels.numpy(), int(cfg.grid.columns), int(cfg.grid.upscale), int(cfg.grid.rows)
            ),
            paths["grid"],
        )
        writer.close()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    return nfe, image_shape


def load_source(cfg: DictConfig) -> SampleSource:
    encoder_cfg = cfg.get("encoder")
    if cfg.ckpt:
        return load_ditlab(
            cfg.ckpt, weights=cfg.weights, encoder_cfg=encoder_cfg, plugins=tuple(cfg.get("plugins") or ())
        )
    root = Path(cfg.paths.root_dir)
    return load_official(cfg.official, cfg.name, cfg.image_size, cfg.num_classes, encoder_cfg, root)


def sampler_config(chosen: DictConfig | None, default: dict[str, Any]) -> DictConfig:
    """``sampler=<name> ...`` as given; otherwise the source's own sampler with any ``+sampler.key=value`` on top."""
    if chosen is not None and "name" in chosen:
        return chosen
    return OmegaConf.merge(OmegaConf.create(default), chosen or {})


def choose_labels(labels: Any, num_classes: int, num_samples: int) -> torch.Tensor:
    """Class-balanced blocks (``labels=null``) or the given labels, each repeated in a block."""
    if labels is None:
        return class_balanced_labels(num_classes, num_samples)
    labels = list(labels)
    if num_classes <= 0:
        raise DitlabError("labels=... needs a class-conditional model; this one is unconditional: drop labels")
    bad = [lab for lab in labels if not (isinstance(lab, int) and 0 <= lab < num_classes)]
    if not labels or bad:
        raise DitlabError(f"labels must be a non-empty list of class ids in [0, {num_classes}), got {labels}")
    per_label = -(-num_samples // len(labels))
    return torch.tensor(labels).repeat_interleave(per_label)[:num_samples]


def recipe_tag(cfg: DictConfig, sampler, chosen: DictConfig, default_sampler: dict[str, Any]) -> str:
    """Folder name from what determines the samples, e.g. ``dpm_solver10_cfg4-all_n100_seed0``; then
    ``_labels3-8`` for chosen labels, and ``_<hash>`` of everything else that changes the samples where
    it differs from the defaults: the sampler's options (``dpm_solver`` vs ``dpm_solver_karras``), the
    labels, weights, precision and batch size (docs/sampling.md)."""
    g = cfg.guidance
    interval = f"_int{g.interval[0]:g}-{g.interval[1]:g}" if g.get("interval") else ""
    labels = "" if cfg.labels is None else "_labels" + "-".join(str(x) for x in list(cfg.labels)[:8])
    labels += "-etc" if cfg.labels is not None and len(cfg.labels) > 8 else ""
    readable = ("name", "steps")  # in the name already

    def options(sampler_cfg: Any, source: Any) -> dict[str, Any]:
        sampler_dict = OmegaConf.to_container(OmegaConf.create(sampler_cfg), resolve=True)
        keys = ("labels", "weights", "precision", "batch_size")
        return {"sampler": {k: v for k, v in sampler_dict.items() if k not in readable}, **{k: source[k] for k in keys}}

    suffix = options_hash(options(chosen, cfg), options(default_sampler, _sample_defaults()), settings=())
    return (
        f"{sampler.name}{sampler.steps}_cfg{float(g.scale):g}-{g.channels}{interval}_n{cfg.num_samples}"
        f"_seed{cfg.seed}{labels}{suffix}"
    )


@lru_cache(maxsize=1)
def _sample_defaults() -> DictConfig:
    return compose("sample")


def _validate(cfg: DictConfig) -> None:
    if bool(cfg.ckpt) == bool(cfg.official):
        raise DitlabError("give exactly one of ckpt=<ditlab checkpoint or run dir> and official=<DiT state dict>")
    if int(cfg.num_samples) <= 0 or int(cfg.batch_size) <= 0:
        raise DitlabError("num_samples and batch_size must be positive")
    if cfg.precision not in AUTOCAST_DTYPES:
        raise DitlabError(f"precision must be one of {', '.join(AUTOCAST_DTYPES)}, got '{cfg.precision}'")
    if int(cfg.grid.rows) <= 0 or int(cfg.grid.columns) <= 0:
        raise DitlabError("grid.rows and grid.columns must be positive")


def main() -> None:
    logging.getLogger("ditlab").setLevel(logging.INFO)
    _hydra_entry("sample", sample)()
