"""Step overhead: ``ditlab-train``'s Lightning module + trainer against a minimal plain-PyTorch loop.

The plain loop has the structure of the official DiT ``train.py`` (forward, loss, backward, AdamW
step, EMA update; no logging). ditlab runs through :func:`ditlab.training.train.train` itself, with
the default callbacks, logger and progress bar of the composed config. Both train the same model,
objective, data and batch, built from the same config and seed.

Interleaving: a timing callback runs one plain step at the end of every ditlab step. The plain step
is timed on its own; the ditlab step is the time from the end of one plain step to the start of the
next, i.e. one full trip through Lightning's loop (data fetch, training_step, backward, optimizer,
EMA, logging, checkpoint check, progress bar). The two alternate step by step, so both see the same
machine load; warm-up steps are dropped. Each fit is one repeat; the ratio reported is
``median(plain step) / median(ditlab step)``, i.e. ditlab's speed as a fraction of the plain loop's.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from ditlab.build import build_data, build_encoder, build_model_for, build_objective, build_optimizer
from ditlab.models.dit import model_tag
from ditlab.tools.bench_latent_cache import machine, to_json  # noqa: F401  (the bench protocol: machine/to_json)
from ditlab.tools.flops import measured_gflops
from ditlab.training.ema import make_ema, update_ema

log = logging.getLogger("ditlab")
NAME = "step_overhead"
# Model sizes: tiny = the default run (16 tokens); S = DiT-S/2's token count at 256² (32x32 latents -> 256).
SIZES = {
    # The default model at batch 8: little compute per step, so the framework's per-step cost shows.
    "probe": ["model=tiny", "data.resolution=8", "data.batch_size=8"],
    "tiny": ["model=tiny", "data.resolution=8", "data.batch_size=128"],
    "S": ["model=S", "model.patch_size=2", "data.resolution=32", "data.batch_size=2"],
}
# ditlab with its defaults, then with parts switched off: the differences attribute the overhead.
VARIANTS = {
    "default": [],
    "no_progress_bar": ["trainer.enable_progress_bar=false"],
    "no_progress_bar_no_logger": ["trainer.enable_progress_bar=false", "logger=none"],
}
# Everything after fit() is kept tiny: no eval metrics, one final sample with a 2-step sampler.
AFTER_FIT = [
    "eval=none",
    "final_samples.num_samples=1",
    "final_samples.batch_size=1",
    "sampler.steps=2",
    "overwrite=true",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(NAME)
    g.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    g.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="ditlab configurations for the probe size (the others run 'default' unless --all-variants)",
    )
    g.add_argument("--all-variants", action="store_true", help="every variant for every size")
    g.add_argument("--repeats", type=int, default=3, help="fits per size and variant (interleaved)")
    g.add_argument("--step-warmup", type=int, default=None, help="untimed steps per fit (default: 10, S 2)")
    g.add_argument("--step-count", type=int, default=None, help="timed steps per fit (default: probe 60, tiny 40, S 8)")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); 1 avoids OpenMP thrashing on a shared machine",
    )


class PlainLoop:
    """The official DiT train.py step: batch -> encode -> loss -> zero_grad/backward -> AdamW -> EMA."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        torch.manual_seed(int(cfg.seed) + 1)
        data = build_data(cfg.data)
        self.encoder = data.adapt_encoder(build_encoder(cfg.encoder)).to(device)
        self.objective = build_objective(cfg.objective)
        self.model = build_model_for(cfg, data, self.encoder, self.objective).to(device).train()
        self.ema = make_ema(self.model)
        self.decay = float(cfg.ema.decay)
        # The same AdamW construction as ditlab's module (fused kernel): the ratio measures the framework only.
        self.opt = build_optimizer(cfg.optim)(list(self.model.named_parameters()), lr=float(cfg.optim.lr))
        self.loader, self.device, self.epoch = data.train_dataloader(), device, 0
        self.batches = iter(self.loader)

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.epoch += 1
            self.loader.sampler.set_epoch(self.epoch) if hasattr(self.loader.sampler, "set_epoch") else None
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> None:
        x, y = self._next()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        loss = self.objective.loss(self.model, self.encoder.encode(x), {"y": y})["loss"].mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        update_ema(self.ema, self.model, self.decay)


class InterleavedTimer(L.Callback):
    """At the end of each ditlab step: close that step's timer, run and time one plain step."""

    def __init__(self, plain: PlainLoop):
        self.plain = plain
        self.ditlab_s: list[float] = []
        self.plain_s: list[float] = []
        self._t_exit: float | None = None

    def _sync(self) -> None:
        if self.plain.device.type == "cuda":
            torch.cuda.synchronize(self.plain.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        t_enter = time.perf_counter()
        if self._t_exit is not None:
            self.ditlab_s.append(t_enter - self._t_exit)
        with torch.enable_grad():
            self.plain.step()
        self._sync()
        t_plain_end = time.perf_counter()
        self.plain_s.append(t_plain_end - t_enter)
        self._t_exit = time.perf_counter()


def trainer_device(cfg: DictConfig) -> torch.device:
    """The device the composed trainer trains on (the plain loop uses the same one)."""
    wants_gpu = str(cfg.trainer.accelerator) in ("gpu", "cuda", "auto")
    return torch.device("cuda") if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


def one_fit(compose, size: str, variant: str, args, run_dir: Path) -> dict[str, Any]:
    from ditlab.training.train import train

    warmup = args.step_warmup if args.step_warmup is not None else (2 if size == "S" else 10)
    steps = args.step_count if args.step_count is not None else {"probe": 60, "tiny": 40}.get(size, 8)
    cfg = compose(
        "train",
        [
            *SIZES[size],
            *VARIANTS[variant],
            *AFTER_FIT,
            f"trainer.max_steps={warmup + steps + 1}",
            f"paths.output_dir={run_dir}",
            *args.overrides,
        ],
    )
    timer = InterleavedTimer(PlainLoop(cfg, trainer_device(cfg)))
    train(cfg, callbacks=[timer])
    # ditlab_s[i] is the step between plain steps i and i+1; drop the warm-up of both.
    d, p = np.array(timer.ditlab_s[warmup:]), np.array(timer.plain_s[warmup + 1 :])
    n = min(len(d), len(p))
    d, p = d[:n], p[:n]
    return {
        "model": model_tag(cfg.model.name, cfg.model.patch_size),
        "gmacs_per_image": round(measured_gflops(timer.plain.model), 4),
        "batch": int(cfg.data.batch_size),
        "timed_steps": n,
        "median_step_s": {"plain": float(np.median(p)), "ditlab": float(np.median(d))},
        "ratio": float(np.median(p) / np.median(d)),
        "pair_ratio_quartiles": [round(float(q), 3) for q in np.quantile(p / d, [0.25, 0.5, 0.75])],
    }


def summarise(fits: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [f["ratio"] for f in fits]
    return {
        "model": fits[0]["model"],
        "batch": fits[0]["batch"],
        "gmacs_per_image": fits[0]["gmacs_per_image"],
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "overhead_ms_per_step_median": round(
            1e3 * statistics.median(f["median_step_s"]["ditlab"] - f["median_step_s"]["plain"] for f in fits), 2
        ),
        "plain_step_ms_median": round(1e3 * statistics.median(f["median_step_s"]["plain"] for f in fits), 2),
        "repeats": [
            {
                **f,
                "ratio": round(f["ratio"], 3),
                "median_step_ms": {k: round(1e3 * v, 2) for k, v in f["median_step_s"].items()},
            }
            for f in fits
        ],
    }


def run(args: argparse.Namespace, compose) -> dict[str, Any]:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, compose)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, compose) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ditlab_bench_step_") as tmp:
        for size in args.sizes:
            variants = args.variants if (size == "probe" or args.all_variants) else ["default"]
            fits: dict[str, list] = {v: [] for v in variants}
            for r in range(args.repeats):  # repeats outermost: variants interleave too
                for v in variants:
                    fits[v].append(one_fit(compose, size, v, args, Path(tmp) / f"{size}_{v}_{r}"))
                    log.info("%s %s repeat %d: ratio %.3f", size, v, r, fits[v][-1]["ratio"])
            results[size] = {v: summarise(f) for v, f in fits.items()}
    first = {s: v.get("default") or next(iter(v.values())) for s, v in results.items()}  # headline: default variant
    headline = {f"{r['model']} batch {r['batch']}": r["ratio_median"] for r in first.values()}
    return {
        "benchmark": NAME,
        "ratio_ditlab_over_plain": headline,
        "target": 0.97,
        "results": results,
        "method": __doc__.split("\n\n", 2)[2].strip().replace("\n", " "),
        "variants": VARIANTS,
        "torch_threads": torch.get_num_threads(),
        "device": str(trainer_device(compose("train", list(args.overrides)))),
        "overrides": args.overrides,
    }
