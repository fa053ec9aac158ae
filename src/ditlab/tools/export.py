"""``ditlab-export``: a ditlab checkpoint -> a diffusers ``DiTPipeline`` folder.

    ditlab-export ckpt=runs/<run> out=exports/<name> [sampler=dpm_solver sampler.steps=10]

The folder holds ``transformer/`` (a :class:`DitlabDiTTransformer2DModel`, whose config stores
DiT's timestep frequencies), ``vae/`` (the run's VAE, its ``scaling_factor`` set to the one the run
trained with), ``scheduler/`` (the diffusers scheduler ditlab's sampler uses, built from the run's
own noise schedule), ``model_index.json`` and ``ditlab_export.json`` (source, sampler, steps, how to
call it). ``DiTPipeline.from_pretrained(out)`` then samples what ``ditlab-sample`` samples with the
same seed, sampler and steps at ``guidance_scale=1``.

Refused with one line: blocks other than adaLN-Zero (diffusers' DiT has no other design), flow
objectives (DiTPipeline runs DDPM-family schedulers), pixel-space runs (the pipeline decodes with a
VAE), a VAE ``shift_factor`` (the pipeline ignores it) and samplers diffusers cannot run (ditlab's
own DDPM with learned Σ, which the pipeline discards, and DDIM).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ditlab.build import build_sampler
from ditlab.cli import _hydra_entry
from ditlab.config import CONFIG_DIR
from ditlab.encoders.vae import VAEEncoder
from ditlab.errors import DitlabError
from ditlab.models.diffusers_interop import to_diffusers
from ditlab.tools.sample_source import load_ditlab

log = logging.getLogger("ditlab")
DIFFUSERS_SAMPLERS = ("dpm_solver", "diffusers")  # samplers that are a diffusers scheduler


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the folder; returns what ``ditlab_export.json`` records."""
    from diffusers import DiTPipeline  # lazy for start-up: diffusers is slow to import

    for key in ("ckpt", "out"):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise DitlabError(f"{key} is not set: ditlab-export ckpt=runs/<run> out=<folder>")
    out = Path(str(cfg.out))
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise DitlabError(f"{out} already exists; choose another out=... or pass overwrite=true to replace it")
    source = load_ditlab(cfg.ckpt, weights=cfg.weights)
    if source.objective.family != "ddpm":
        raise DitlabError(
            f"only DDPM-objective runs export to DiTPipeline (its schedulers are DDPM-family); "
            f"this run uses the '{source.objective.family}' objective"
        )
    transformer = to_diffusers(source.model)  # refuses other blocks and MLP ratios in one line
    encoder = source.encoder
    if not isinstance(encoder, VAEEncoder):
        raise DitlabError(
            f"this run is in pixel space (encoder={encoder.name}); DiTPipeline decodes latents with a "
            "VAE, so only runs trained with encoder=sd_vae or encoder=taesd export"
        )
    if encoder.shift_factor:
        raise DitlabError(
            f"the run's VAE uses shift_factor={encoder.shift_factor}, which DiTPipeline ignores; "
            "such a run cannot export exactly"
        )
    sampler = build_sampler(_sampler_config(cfg.get("sampler"), source.default_sampler))
    sampler.check(source.objective)
    scheduler = sampler.build(source.objective)
    vae = encoder.vae
    vae.register_to_config(scaling_factor=float(encoder.scaling_factor))  # DiTPipeline divides latents by it
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)

    tmp = out.with_name(out.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    record = {
        "source": source.info,
        "sampler": sampler.describe(),
        "num_inference_steps": sampler.steps,
        "num_classes": source.num_classes,
        "latent_shape": list(source.latent_shape),
        "vae_scaling_factor": float(encoder.scaling_factor),
        "usage": (
            f"DiTPipeline.from_pretrained('{out}')(class_labels=[...], num_inference_steps={sampler.steps}, "
            "guidance_scale=1, generator=torch.Generator().manual_seed(seed), output_type='np')"
        ),
        "notes": [
            "DiTPipeline guides with the null label 1000 (ImageNet): guidance_scale > 1 only for 1000-class models.",
            "DiTPipeline guides all latent channels and discards the learned variance.",
            "Loading needs ditlab installed (model_index.json names ditlab's transformer class, which stores the "
            "timestep-frequency fix in its config).",
        ],
    }
    (tmp / "ditlab_export.json").write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("wrote %s (DiTPipeline: transformer + vae + %s, %d steps)", out, type(scheduler).__name__, sampler.steps)
    return record


def _sampler_config(chosen: DictConfig | None, own: dict[str, Any]) -> DictConfig:
    """The sampler asked for (must be a diffusers scheduler), else the run's if it is one, else dpm_solver."""
    if chosen is not None and "name" in chosen:
        if chosen.name not in DIFFUSERS_SAMPLERS:
            raise DitlabError(
                f"sampler={chosen.name} is ditlab's own code, not a diffusers scheduler, so DiTPipeline "
                f"cannot run it; export with sampler=dpm_solver or sampler=diffusers"
            )
        return chosen
    if own.get("name") in DIFFUSERS_SAMPLERS:
        return OmegaConf.merge(OmegaConf.create(own), chosen or {})
    log.info(
        "the run's sampler '%s' is not a diffusers scheduler; exporting DPM-Solver++ (sampler=dpm_solver)",
        own.get("name"),
    )
    return OmegaConf.merge(OmegaConf.load(Path(CONFIG_DIR) / "sampler" / "dpm_solver.yaml"), chosen or {})


def main() -> None:
    logging.getLogger("ditlab").setLevel(logging.INFO)
    _hydra_entry("export", export)()
