"""``val_loss``: the objective's own training loss on a fixed set, at fixed times and fixed noise.

A low-noise target for scaling laws (Liang et al. 2024, *Scaling Laws for Diffusion Transformers*,
arXiv 2410.08184, fit DiT's loss against compute): no sampling, so it is cheap enough to evaluate
often, and every evaluation of every run sees exactly the same inputs:

* **images**: ``eval.val_loss.num_images`` of the data, a seeded subset (``eval.val_loss.seed``),
  encoded once (at the first evaluation) under that seed; for the bundled digits, which have no
  held-out split, the subset is drawn from the images the run trains on;
* **times**: the midpoints of ``eval.val_loss.num_times`` equal-probability strata of the
  objective's *own* training time distribution (the quantiles (k + ½)/K: uniform, logit-normal,
  shifted), so the value is a stratified estimate of the very expectation the training loss
  estimates, on the same scale as ``train/loss``, for ddpm (integer t) and flow (continuous t);
* **noise**: one seeded generator per stratum, independent of the training RNG (which is left
  untouched); every image is evaluated at every time;
* **weights**: the EMA, in eval mode (no label dropout), in fp32.

ddpm with learned Σ gets its full loss (MSE + VLB term), flow matching its weighted regression loss.
"""

from __future__ import annotations

import time
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from ditlab.errors import DitlabError

VAL_LOSS = "val_loss"
DEFAULTS = {"num_images": 256, "num_times": 8, "seed": 0, "batch_size": 256, "every_n_steps": None}


def val_loss_options(ec: Any) -> dict[str, Any]:
    """``eval.val_loss`` merged over the defaults, checked (one line naming the option on bad input)."""
    given = dict(ec.get("val_loss") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise DitlabError(f"eval.val_loss.{unknown[0]} is not an option; use {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    for key in ("num_images", "num_times", "batch_size"):
        if int(opts[key]) <= 0:
            raise DitlabError(f"eval.val_loss.{key} must be positive, got {opts[key]}")
    if opts["every_n_steps"] is not None and int(opts["every_n_steps"]) <= 0:
        raise DitlabError(
            f"eval.val_loss.every_n_steps must be a positive step count (or null: at the evaluations), "
            f"got {opts['every_n_steps']}"
        )
    return opts


def noise_level_quantiles(sampler: Any, u: torch.Tensor) -> torch.Tensor:
    """Quantiles of a :class:`~ditlab.objectives.time_sampling.NoiseLevelSampler`'s τ at probabilities ``u``."""
    from ditlab.objectives.time_sampling import shift_noise_level

    if sampler.kind == "uniform":
        tau = u.clone()
    else:  # τ = sigmoid(n), n ~ N(mean, std²): monotone, so quantiles map through
        z = torch.tensor([NormalDist().inv_cdf(float(p)) for p in u], dtype=torch.float64)
        tau = torch.sigmoid(z * sampler.std + sampler.mean)
    return shift_noise_level(tau.double(), sampler.shift).float()  # the shift is monotone too


def stratified_times(objective: Any, num_times: int) -> torch.Tensor:
    """(K,) model times at the midpoints of K equal-probability strata of the objective's training draw."""
    u = (torch.arange(num_times, dtype=torch.float64) + 0.5) / num_times
    if hasattr(objective, "time_quantiles"):  # a plugin objective says where its strata lie
        return torch.as_tensor(objective.time_quantiles(u))
    sampler = getattr(objective, "noise_levels", None)
    if objective.family == "ddpm" and sampler is not None:
        steps = objective.num_timesteps
        return (noise_level_quantiles(sampler, u) * steps).long().clamp_(0, steps - 1)  # as DDPMObjective.sample_t
    if objective.family == "flow" and sampler is not None:
        t0, t1 = objective.interval(eval=False)
        tau = u.float() if sampler.is_default else noise_level_quantiles(sampler, u)
        t = tau if sampler.is_default else 1 - tau  # as FlowObjective.sample_t
        return t * (t1 - t0) + t0
    raise DitlabError(
        f"val_loss does not know where objective '{objective.name}' draws its training times; "
        "give the objective a time_quantiles(u) method or drop val_loss from eval.metrics"
    )


def fixed_images(data: Any, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of ``count`` images (sorted indices) and their labels, from the data module."""
    if hasattr(data, "real_images"):
        images, labels = data.real_images()
        pick = _subset(len(images), count, seed)
        return images[pick], labels[pick]
    if hasattr(data, "make_dataset"):  # image folders: centre crop, no flip
        dataset = data.make_dataset(random_flip=False, substitute=False)
    else:  # a latent cache
        data.setup()
        dataset = data.dataset
    items = [dataset[int(i)] for i in _subset(len(dataset), count, seed)]
    return torch.stack([torch.as_tensor(it[0]) for it in items]), torch.as_tensor([int(it[1]) for it in items])


def _subset(total: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=g)[: min(count, total)].sort().values


class ValidationLoss:
    """The fixed inputs (built once, at the first :meth:`compute`) and the loss of a model on them."""

    def __init__(self, opts: dict[str, Any], data: Any, objective: Any):
        self.opts, self.data, self.objective = dict(opts), data, objective
        self.times = stratified_times(objective, int(opts["num_times"]))
        self.latents: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    def _prepare(self, encoder: Any, device: torch.device) -> None:
        seed = int(self.opts["seed"])
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # a sampling encoder (VAE posterior) draws seeded
            torch.manual_seed(seed)
            images, labels = fixed_images(self.data, int(self.opts["num_images"]), seed)
            with torch.no_grad():
                self.latents = torch.cat(
                    [encoder.encode(b.to(device)).float() for b in images.split(int(self.opts["batch_size"]))]
                )
        self.labels = labels.long().to(device)

    def noise(self, k: int) -> torch.Tensor:
        """Stratum k's noise: its own CPU generator, seeded (seed, k); the same on every device."""
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([int(self.opts["seed"]), k]).generate_state(1)[0]))
        return torch.randn(self.latents.shape, generator=g).to(self.latents.device)

    @torch.no_grad()
    def compute(self, model: torch.nn.Module, encoder: Any, device: torch.device) -> dict[str, Any]:
        """{"val_loss": mean over strata, "val_loss_strata": per-stratum means, "seconds": time taken}."""
        t0 = time.time()
        if self.latents is None or self.latents.device != device:
            self._prepare(encoder, device)
        was_training = model.training
        model.eval()
        strata = []
        batch = int(self.opts["batch_size"])
        with torch.autocast(device.type, enabled=False):
            for k, t_k in enumerate(self.times.tolist()):
                noise, total = self.noise(k), 0.0
                for i in range(0, len(self.latents), batch):
                    z, y = self.latents[i : i + batch], self.labels[i : i + batch]
                    t = torch.full((len(z),), t_k, device=device, dtype=self.times.dtype)
                    terms = self.objective.loss_at(model, z, t, noise[i : i + batch], {"y": y})
                    total += float(terms["loss"].double().sum())
                strata.append(total / len(self.latents))
        model.train(was_training)
        return {VAL_LOSS: float(np.mean(strata)), "val_loss_strata": strata, "seconds": round(time.time() - t0, 3)}

    def describe(self) -> dict[str, Any]:
        """What the value was computed on (goes into each evaluation's row)."""
        return {
            "num_images": len(self.latents) if self.latents is not None else int(self.opts["num_images"]),
            "times": [round(float(t), 6) for t in self.times],
            "time_strata": "midpoints of equal-probability strata of the objective's training time draw",
            "seed": int(self.opts["seed"]),
            "weights": "ema",
        }
