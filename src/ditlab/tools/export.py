"""``ditlab-export``: a ditlab checkpoint -> a diffusers ``DiTPipeline`` folder.

    ditlab-export ckpt=runs/<run> out=exports/<name> [sampler=dpm_solver sampler.steps=10]

The folder holds ``transformer/`` (a :class:`DitlabDiTTransformer2DModel`, whose config stores
DiT's timestep frequencies and fused q/k/v projection), ``vae/`` (the run's VAE, its ``scaling_factor`` set to the one the run
trained with), ``scheduler/`` (the diffusers scheduler ditlab's sampler uses, built from the run's
own noise schedule), ``model_index.json`` and ``ditlab_export.json`` (source, sampler, steps, how to
call it). ``DiTPipeline.from_pretrained(out)`` then samples, bit for bit, what ``ditlab-sample``
samples with the same seed, labels, sampler and steps (guidance with ``guidance.channels=all`` and
1000-class models only: the pipeline's null label is 1000).

Refused with one line: blocks other than adaLN-Zero (diffusers' DiT has no other design), flow
objectives (DiTPipeline runs DDPM-family schedulers), pixel-space runs (the pipeline decodes with a
VAE), a VAE ``shift_factor`` (the pipeline ignores it) and samplers diffusers cannot run (ditlab's
own DDPM with learned Σ, which the pipeline discards, and DDIM) or runs differently from ditlab
(schedulers that scale the first noise, use fractional timesteps or draw noise in their steps).
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ditlab.build import build_sampler
from ditlab.cli import _hydra_entry
from ditlab.config import CONFIG_DIR
from ditlab.encoders.vae import VAEEncoder
from ditlab.errors import DitlabError
from ditlab.inputs import check_writable
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
    check_writable(out, "out")  # before the checkpoint is read and the pipeline built
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise DitlabError(f"{out} already exists; choose another out=... or pass overwrite=true to replace it")
    source = load_ditlab(cfg.ckpt, weights=cfg.weights)
    if source.objective.family != "ddpm":
        raise DitlabError(
            f"only DDPM-objective runs export to DiTPipeline (its schedulers are DDPM-family); "
            f"this run uses the '{source.objective.family}' objective"
        )
    transformer = to_diffusers(source.model)  # refuses other blocks and MLP ratios in one line
    encoder = _exportable_vae(source.encoder)
    sampler = build_sampler(_sampler_config(cfg.get("sampler"), source.default_sampler))
    sampler.check(source.objective)
    scheduler = sampler.build(source.objective)
    _check_pipeline_runs_it_alike(scheduler)
    vae = encoder.vae
    vae.register_to_config(scaling_factor=float(encoder.scaling_factor))  # DiTPipeline divides latents by it
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)

    tmp = out.with_name(out.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    record = _record(source, sampler, float(encoder.scaling_factor), out)
    (tmp / "ditlab_export.json").write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("wrote %s (DiTPipeline: transformer + vae + %s, %d steps)", out, type(scheduler).__name__, sampler.steps)
    return record


def _exportable_vae(encoder: Any) -> VAEEncoder:
    """The run's encoder if DiTPipeline can decode with it exactly: a VAE with no shift factor."""
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
    return encoder


def _record(source: Any, sampler: Any, scaling_factor: float, out: Path) -> dict[str, Any]:
    """What ``ditlab_export.json`` records: the source run, the sampler and how to load the folder."""
    return {
        "source": source.info,
        "sampler": sampler.describe(),
        "num_inference_steps": sampler.steps,
        "num_classes": source.num_classes,
        "latent_shape": list(source.latent_shape),
        "vae_scaling_factor": scaling_factor,
        "usage": (
            "import ditlab.models.diffusers_transformer  # registers the transformer class the folder names\n"
            f"DiTPipeline.from_pretrained('{out}')(class_labels=[...], num_inference_steps={sampler.steps}, "
            "guidance_scale=1, generator=torch.Generator().manual_seed(seed), output_type='np')"
        ),
        "notes": [
            "DiTPipeline guides with the null label 1000 (ImageNet): guidance_scale > 1 only for 1000-class models.",
            "DiTPipeline guides all latent channels and discards the learned variance.",
            "Loading needs ditlab installed and ditlab.models.diffusers_transformer imported first (model_index.json "
            "names ditlab's transformer class, which stores the timestep-frequency fix and the fused q/k/v "
            "projection in its config; diffusers imports no module a folder names).",
            "Same seed, labels and steps as ditlab-sample (one pipeline call per ditlab batch, one generator) "
            "give the same images: the same operations in the same order, bit for bit.",
        ],
    }


def _check_pipeline_runs_it_alike(scheduler) -> None:
    """Refuse schedulers that DiTPipeline's loop (``pipelines/dit/pipeline_dit.py``) runs differently from
    ditlab's sampler: it never scales the first noise by ``init_noise_sigma``, feeds the transformer the
    scheduler's timesteps unrounded, and calls ``step`` without a generator (noise from the global RNG)."""
    name = type(scheduler).__name__
    why = None
    if float(scheduler.init_noise_sigma) != 1.0:
        why = f"it starts from noise scaled by init_noise_sigma={float(scheduler.init_noise_sigma):g}, which DiTPipeline skips"
    elif not torch.equal(scheduler.timesteps, scheduler.timesteps.round()):
        why = "its timesteps are fractional; DiTPipeline passes them unrounded, ditlab rounds them"
    elif "generator" in inspect.signature(scheduler.step).parameters:
        t, x = scheduler.timesteps[0], torch.ones(1, 1, 2, 2)
        steps = []
        for seed in (0, 1):  # a stochastic step gives different results for different generators
            s = copy.deepcopy(scheduler)
            out = s.step(
                torch.full_like(x, 0.5), t, s.scale_model_input(x, t), generator=torch.Generator().manual_seed(seed)
            )
            steps.append(out.prev_sample)
        if not torch.equal(*steps):
            why = "its steps draw noise, which DiTPipeline takes from the global RNG instead of the seeded generator"
    if why:
        raise DitlabError(
            f"{name} cannot export: {why}; export with sampler=dpm_solver (deterministic DPM-Solver++) or "
            "sampler=diffusers (UniPC)"
        )


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
