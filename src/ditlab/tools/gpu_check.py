"""``make gpu-check`` / ``python -m ditlab.tools.gpu_check``: what ditlab achieves on this machine's GPU.

    python -m ditlab.tools.gpu_check                          # every part; CUDA parts skipped without a GPU
    python -m ditlab.tools.gpu_check --quick --skip ddp_smoke # the CPU smoke version (tests)

Parts (each writes one entry of the JSON; a part that cannot run here says why):
  sdpa_backend    which scaled-dot-product-attention kernel ran at DiT-XL/2's attention shape
  xl2_modes       DiT-XL/2 on 32x32x4 latents (256² images): images/s, TFLOP/s, MFU and peak memory for
                  fp32/TF32, bf16-mixed, bf16 + torch.compile, bf16 + compile + gradient checkpointing  [CUDA]
  plain_loop      the official train.py structure (fp32/TF32, no compile) at the same size, and the
                  ratios of each ditlab mode to it (CPU: the step-overhead probe of make bench)
  bf16_vs_fp32    loss curves of a small model trained with the same seed in fp32 and bf16-mixed
  ddp_smoke       a 2-step DDP run (2 gloo processes on CPU); the EMA is checked in the checkpoint
  fsdp_smoke      a 2-step FSDP run, resumed to 4 steps, against an uninterrupted 4-step run  [CUDA]

Train FLOPs = 3 x 2 x forward MACs per image (see ditlab.training.throughput).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ditlab.cli import compose
from ditlab.errors import DitlabError, one_line_errors
from ditlab.tools.gpu_check_processes import QUIET, ddp_smoke, fsdp_smoke

log = logging.getLogger("ditlab")
PARTS = ("sdpa_backend", "xl2_modes", "plain_loop", "bf16_vs_fp32", "ddp_smoke", "fsdp_smoke")
CUDA_ONLY = {"xl2_modes": "DiT-XL/2 throughput needs a CUDA GPU", "fsdp_smoke": "Lightning refuses FSDP on CPU"}
# ditlab modes at XL/2: name -> overrides on top of trainer=gpu.
XL2_MODES = {
    "fp32_tf32": ["trainer.precision=32-true"],
    "bf16_mixed": ["trainer.precision=bf16-mixed"],
    "bf16_compile": ["trainer.precision=bf16-mixed", "model.compile=true"],
    "bf16_compile_grad_ckpt": ["trainer.precision=bf16-mixed", "model.compile=true", "model.grad_checkpointing=true"],
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m ditlab.tools.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="result JSON (default experiments/gpu_check/<device>.json)")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="leave these parts out")
    parser.add_argument("--quick", action="store_true", help="smoke sizes (a few steps each)")
    parser.add_argument("--batch-size", type=int, default=128, help="XL/2 batch to try first (halved on OOM)")
    parser.add_argument("--steps", type=int, default=40, help="XL/2 timed steps per mode (after warm-up)")
    parser.add_argument("--curve-steps", type=int, default=300, help="bf16-vs-fp32 training steps")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    with one_line_errors():
        cuda = torch.cuda.is_available()
        out = args.out or Path("experiments/gpu_check") / f"{_slug(_device_name())}.json"
        if out.exists() and not args.overwrite:
            raise DitlabError(f"{out} exists; pass --overwrite or --out other.json")
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 mode = TF32 tensor cores (DiT's train.py does the same)
            torch.backends.cudnn.allow_tf32 = True
        result: dict[str, Any] = {
            "machine": machine(),
            "command": " ".join(["python -m ditlab.tools.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
            "quick": args.quick,
            "flops_formula": "train FLOPs = 3 x 2 x forward MACs",
            "parts": {},
        }
        with tempfile.TemporaryDirectory(prefix="ditlab_gpu_check_") as tmp:
            for part in args.only or PARTS:
                if part in args.skip:
                    continue
                if part in CUDA_ONLY and not cuda:
                    reason = f"skipped: no CUDA device here ({CUDA_ONLY[part]})"
                    print(f"gpu_check: {part} {reason}", flush=True)
                    result["parts"][part] = {"skipped": reason}
                    continue
                t0 = time.perf_counter()
                fn: Callable[..., dict[str, Any]] = PART_FUNCTIONS[part]
                entry = fn(args, Path(tmp) / part, result["parts"])
                entry["seconds"] = round(time.perf_counter() - t0, 1)
                result["parts"][part] = entry
                print(f"gpu_check: {part}: {json.dumps(entry)[:400]}", flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2) + "\n")  # after each part: a crash keeps what ran
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"gpu_check: wrote {out}")
    return result


def machine() -> dict[str, Any]:
    import lightning

    info = {
        "device": _device_name(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            capability=f"{p.major}.{p.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu-{platform.machine()}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


# ------------------------------------------------------------------------------------------ parts
def sdpa_backend(args, tmp: Path, done: dict) -> dict[str, Any]:
    """Profile one attention call at XL/2's shape (16 heads x 72 dims, 256 tokens) and name its kernel."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    q, k, v = (
        torch.randn(4 if args.quick else 32, 16, 256, 72, device=device, dtype=dtype, requires_grad=True)
        for _ in range(3)
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    ops = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower() and e.key.startswith("aten::_")})
    names = {"flash": "flash", "cudnn": "cudnn", "efficient": "efficient", "math": "math"}
    ran = [label for key, label in names.items() if any(key in op for op in ops)]
    return {"device": device, "dtype": str(dtype), "aten_ops": ops, "backend": ran[0] if ran else "math (unfused)"}


def _xl2_cfg(tmp: Path, batch: int, steps: int, overrides: list[str]):
    return compose(
        "train",
        [
            "trainer=gpu",
            "model=XL",
            "model.patch_size=2",
            "data=latents",
            f"data.cache_dir={tmp / 'cache'}",
            "data.resolution=null",
            f"data.batch_size={batch}",
            "data.num_workers=4",
            f"trainer.max_steps={steps}",
            "trainer.log_every_n_steps=5",
            "throughput.warmup_steps=10",
            "logger=none",
            "checkpoint.every_n_steps=100000",
            *QUIET,
            f"paths.output_dir={tmp / 'run'}",
            *overrides,
        ],
    )


def _latent_cache(tmp: Path, images: int) -> None:
    """Random SD-architecture VAE latents of generated 256² images (timing does not depend on content)."""
    if (tmp / "cache").exists():
        return
    from diffusers import AutoencoderKL

    from ditlab.cache.extract import extract
    from ditlab.tools.bench_latent_cache import SD_VAE_CONFIG, make_images

    make_images(tmp / "images", images)
    torch.manual_seed(0)
    AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(tmp / "vae")
    extract(
        compose(
            "extract",
            [
                f"data.root={tmp / 'images'}",
                "data.resolution=256",
                "data.num_workers=4",
                f"encoder.path={tmp / 'vae'}",
                f"cache_dir={tmp / 'cache'}",
                "batch_size=64",
                "device=cuda",
            ],
        )
    )


def xl2_modes(args, tmp: Path, done: dict) -> dict[str, Any]:
    from ditlab.training.train import train

    steps = 4 if args.quick else args.steps + 10
    batch = args.batch_size
    _latent_cache(tmp, max(2 * batch, 64))
    modes: dict[str, Any] = {}
    for name, overrides in XL2_MODES.items():
        while True:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                summary = train(_xl2_cfg(tmp, batch, steps, overrides))
                break
            except torch.cuda.OutOfMemoryError:
                if batch <= 1:
                    raise
                batch //= 2
                log.info("XL/2 %s: out of memory, retrying at batch %d", name, batch)
        tp = summary.get("throughput", {})
        modes[name] = {
            "batch": batch,
            "overrides": overrides,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            **{
                k: tp.get(k)
                for k in (
                    "images_per_sec",
                    "tokens_per_sec",
                    "tflops_per_sec",
                    "mfu",
                    "peak_tflops_per_device",
                    "peak_source",
                    "measured_steps",
                )
            },
        }
    return {"model": "DiT-XL/2", "latent": "32x32x4 (256x256 images)", "modes": modes, "final_batch": batch}


def plain_loop(args, tmp: Path, done: dict) -> dict[str, Any]:
    """The official loop's structure at the XL/2 size (GPU), or the step-overhead probe (CPU)."""
    from ditlab.tools import bench_step

    if not torch.cuda.is_available():
        ns = argparse.Namespace(step_warmup=2, step_count=6 if args.quick else 40, overrides=[])
        fit = bench_step.one_fit(compose, "probe", "default", ns, tmp / "probe")
        return {
            "cpu_probe": fit,
            "ratio_ditlab_over_plain": round(fit["ratio"], 3),
            "note": "CPU: DiT-tiny/2 at batch 8, interleaved with ditlab's Lightning loop (see make bench)",
        }
    xl = done.get("xl2_modes", {})
    batch = xl.get("final_batch", args.batch_size)
    _latent_cache(tmp, max(2 * batch, 64))
    cfg = _xl2_cfg(tmp, batch, 1, XL2_MODES["fp32_tf32"])
    loop = bench_step.PlainLoop(cfg, torch.device("cuda"))
    warmup, steps = (2, 3) if args.quick else (10, args.steps)
    for _ in range(warmup):
        loop.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loop.step()
    torch.cuda.synchronize()
    ips = batch * steps / (time.perf_counter() - t0)
    ratios = {
        name: round(m["images_per_sec"] / ips, 3) for name, m in xl.get("modes", {}).items() if m.get("images_per_sec")
    }
    return {
        "images_per_sec": round(ips, 3),
        "batch": batch,
        "precision": "fp32 (TF32 matmuls), eager",
        "ratio_ditlab_mode_over_plain": ratios,
        "goal_bf16_compile_over_plain": 2.5,
    }


def bf16_vs_fp32(args, tmp: Path, done: dict) -> dict[str, Any]:
    """The same seed and data in fp32 and bf16-mixed; compare the loss curves (windowed means)."""
    import csv

    import numpy as np

    from ditlab.training.train import train

    steps = 8 if args.quick else args.curve_steps
    accel = ["trainer=gpu"] if torch.cuda.is_available() else []
    small = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "data.batch_size=32"] if args.quick else []
    curves = {}
    for precision in ("32-true", "bf16-mixed"):
        run = tmp / precision
        train(
            compose(
                "train",
                [
                    *accel,
                    *small,
                    f"trainer.precision={precision}",
                    f"trainer.max_steps={steps}",
                    "trainer.log_every_n_steps=1",
                    *QUIET,
                    f"paths.output_dir={run}",
                ],
            )
        )
        with open(run / "metrics.csv") as f:
            curves[precision] = np.array([float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")])
    a, b = curves["32-true"], curves["bf16-mixed"]
    w = max(1, len(a) // 5)  # last fifth of training
    end_a, end_b = float(a[-w:].mean()), float(b[-w:].mean())
    return {
        "steps": steps,
        "window": w,
        "final_loss_fp32": round(end_a, 5),
        "final_loss_bf16": round(end_b, 5),
        "relative_difference": round(abs(end_b - end_a) / end_a, 4),
        "mean_abs_step_difference": round(float(np.abs(a - b).mean()), 5),
        "agree_within_5pct": abs(end_b - end_a) / end_a < 0.05,
    }


PART_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "sdpa_backend": sdpa_backend,
    "xl2_modes": xl2_modes,
    "plain_loop": plain_loop,
    "bf16_vs_fp32": bf16_vs_fp32,
    "ddp_smoke": ddp_smoke,
    "fsdp_smoke": fsdp_smoke,
}


if __name__ == "__main__":
    main()
