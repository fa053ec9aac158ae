"""Training throughput with the VAE in the loop (DiT's official loop) vs from a latent cache.

Everything is built in a temporary directory: ImageNet-layout PNGs, and a randomly initialised
VAE with Stable Diffusion's architecture written with ``save_pretrained`` (no download; timing
does not depend on the weights). Both loops train the same DiT with the same global batch, built
from the real configs (``data=imagefolder encoder=sd_vae`` vs ``ditlab-extract`` then
``data=latents``). They run alternately, one step each, so both see the same machine load; a
step is timed from fetching its batch to the end of the EMA update, so data loading, encoding,
forward, backward and the optimizer step all count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from ditlab.build import build_data, build_encoder, build_model, build_model_for, build_objective
from ditlab.cache.extract import extract
from ditlab.devices import resolve_device
from ditlab.encoders.vae import VAEEncoder
from ditlab.models.accounting import closed_form_gflops, count_params, measured_gflops
from ditlab.models.dit import model_tag
from ditlab.training.ema import update_ema
from ditlab.training.module import DiffusionModule

log = logging.getLogger("ditlab")
NAME = "latent_cache"
# Stable Diffusion's VAE (sd-vae-ft-ema/-mse config.json): 256x256x3 -> 32x32x4.
SD_VAE_CONFIG = dict(
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(NAME)
    g.add_argument("--resolution", type=int, default=256)
    g.add_argument("--batch-size", type=int, default=8, help="global batch, the same for both loops")
    g.add_argument("--images", type=int, default=8, help="images in the generated folder (loops cycle over epochs)")
    g.add_argument("--models", nargs="+", default=["S", "tiny"], help="model configs, each at patch size 2")
    g.add_argument("--warmup", type=int, default=1, help="untimed steps of each loop before timing")
    g.add_argument("--steps", type=int, default=5, help="timed steps of each loop")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda")


class TrainLoop:
    """One training setup built like train() builds it, stepped by hand: the module's training_step,
    backward, AdamW step and EMA update (what Lightning's automatic optimisation runs per step)."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        L.seed_everything(int(cfg.seed), verbose=False)
        self.data = build_data(cfg.data)
        encoder = self.data.adapt_encoder(build_encoder(cfg.encoder))
        objective = build_objective(cfg.objective)
        model = build_model_for(cfg, self.data, encoder, objective)
        self.module = DiffusionModule(
            model, objective, encoder, lr=cfg.optim.lr, ema_decay=cfg.ema.decay, images_per_step=self.data.batch_size
        ).to(device)
        encoder.to(device)
        self.module.train()
        warnings.filterwarnings("ignore", message=r".*self\.log\(\)")  # no Trainer to log to: nothing is logged
        self.optimizer = self.module.configure_optimizers()
        self.device = device
        self.loader = self.data.train_dataloader()
        self.epoch, self.batches = 0, iter(self.loader)
        self.model_name = model_tag(cfg.model.name, cfg.model.patch_size)
        self.times: list[float] = []

    def _next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:  # next epoch, reshuffled
            self.epoch += 1
            self.loader.sampler.set_epoch(self.epoch)
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self, timed: bool) -> None:
        t0 = time.perf_counter()
        x, y = self.data.on_before_batch_transfer(self._next_batch(), 0)
        loss = self.module.training_step((x.to(self.device), y.to(self.device)), 0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        update_ema(self.module.ema, self.module.model, self.module.ema_decay)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if timed:
            self.times.append(time.perf_counter() - t0)

    def result(self) -> dict[str, Any]:
        seconds = float(np.sum(self.times))
        return {
            "data": self.data.name,
            "timed_steps": len(self.times),
            "step_seconds": [round(t, 3) for t in self.times],
            "images_per_second": self.data.batch_size * len(self.times) / seconds,
            "model": self.model_name,
            "gmacs_per_image": measured_gflops(self.module.model),
            **count_params(self.module.model),
        }


def interleaved(raw: TrainLoop, cached: TrainLoop, warmup: int, steps: int) -> None:
    """Alternate the two loops step by step, so both see the same machine load (shared CPUs drift)."""
    for i in range(warmup + steps):
        raw.step(timed=i >= warmup)
        cached.step(timed=i >= warmup)


def make_images(root: Path, count: int, seed: int = 0) -> None:
    """``count`` random PNGs in two class folders, larger than the crop so ADM's resize runs."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(300, 400)), int(rng.integers(270, 330))
        Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def vae_gmacs(vae_dir: Path, resolution: int) -> float:
    enc = VAEEncoder(path=str(vae_dir))
    with torch.device("meta"):  # shapes only: counts without computing
        enc.vae.to("meta")
        counter = FlopCounterMode(display=False)
        with counter:
            enc.vae.encode(torch.zeros(1, 3, resolution, resolution))
    return counter.get_total_flops() / 2 / 1e9


def projected_ratio(dit_gmacs: float, encoder_gmacs: float) -> float:
    """Compute-bound estimate: (VAE + 3 x DiT forward) / (3 x DiT forward); backward ~ 2 x forward."""
    return (encoder_gmacs + 3 * dit_gmacs) / (3 * dit_gmacs)


def paper_model_gmacs(compose, name: str, side: int) -> float:
    """Closed-form forward GMACs of DiT-<name>/2 on side x side x 4 latents (built on the meta device)."""
    cfg = compose("train", [f"model={name}", "model.patch_size=2"])
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.block, in_channels=4, input_size=side, out_channels=8, num_classes=1000)
    return closed_form_gflops(model)


def run(args: argparse.Namespace, compose) -> dict[str, Any]:
    from diffusers import AutoencoderKL  # lazy: diffusers is slow to import and only this needs it

    b, res = args.batch_size, args.resolution
    device = resolve_device(args.device)
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ditlab_bench_") as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        make_images(images, args.images)
        torch.manual_seed(0)
        AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(tmp / "vae")
        extract_seconds = extract_cache(compose, images, tmp, res, b, device)
        for model in args.models:
            name, result = compare_loops(args, compose, model, tmp, images, device)
            models[name] = result
        encoder_gmacs = vae_gmacs(tmp / "vae", res)
    side = res // 8
    return {
        "benchmark": NAME,
        "ratio_cached_over_raw": {name: m["ratio_cached_over_raw"] for name, m in models.items()},
        "models": models,
        "method": "one step of each loop in turn after warm-up; images/s = batch x timed steps / their seconds",
        "resolution": res,
        "global_batch": b,
        "vae": "AutoencoderKL, Stable Diffusion architecture (83.7M params), random init",
        "vae_encoder_gmacs_per_image": round(encoder_gmacs, 2),
        "extraction": {
            "images": args.images,
            "seconds": round(extract_seconds, 1),
            "images_per_second": round(args.images / extract_seconds, 3),
            "note": "each image is encoded twice (itself and its flip)",
        },
        "projected_ratio_compute_bound": {
            model_tag(m, 2): round(projected_ratio(paper_model_gmacs(compose, m, side), encoder_gmacs), 2)
            for m in ("tiny", "S", "B", "L", "XL")
        },
        "overrides": args.overrides,
    }


def extract_cache(compose, images: Path, tmp: Path, res: int, batch_size: int, device: Any) -> float:
    """ditlab-extract of ``images`` into ``tmp/cache`` with the VAE in ``tmp/vae``; returns its seconds."""
    log.info("extracting the latent cache (both flips, posterior mean and std)")
    t0 = time.perf_counter()
    extract(
        compose(
            "extract",
            [
                f"data.root={images}",
                f"data.resolution={res}",
                "data.num_workers=0",
                f"encoder.path={tmp / 'vae'}",
                f"cache_dir={tmp / 'cache'}",
                f"batch_size={batch_size}",
                f"device={device}",
            ],
        )
    )
    return time.perf_counter() - t0


def compare_loops(
    args: argparse.Namespace, compose, model: str, tmp: Path, images: Path, device: Any
) -> tuple[str, dict[str, Any]]:
    """One model's training loop from images (VAE each step) and from the cache, timed in turn."""
    b, res = args.batch_size, args.resolution
    common = [
        f"data.resolution={res}",
        f"data.batch_size={b}",
        "data.num_workers=0",
        "encoder=sd_vae",
        f"encoder.path={tmp / 'vae'}",
        f"model={model}",
        "model.patch_size=2",
        *args.overrides,
    ]
    raw_loop = TrainLoop(compose("train", ["data=imagefolder", f"data.root={images}", *common]), device)
    cached_loop = TrainLoop(
        compose("train", ["data=latents", f"data.cache_dir={tmp / 'cache'}", "data.resolution=null", *common]),
        device,
    )
    log.info(
        "%s: %d warm-up + %d timed steps of each loop, alternating (images -> VAE -> DiT | cache -> DiT)",
        raw_loop.model_name,
        args.warmup,
        args.steps,
    )
    interleaved(raw_loop, cached_loop, args.warmup, args.steps)
    raw, cached = raw_loop.result(), cached_loop.result()
    ratio = cached["images_per_second"] / raw["images_per_second"]
    log.info(
        "%s: raw %.3f images/s, cached %.3f images/s: %.2fx",
        raw["model"],
        raw["images_per_second"],
        cached["images_per_second"],
        ratio,
    )
    return raw["model"], {"ratio_cached_over_raw": round(ratio, 2), "raw": raw, "cached": cached}


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2) + "\n"
