"""Training throughput: images/s, tokens/s, achieved TFLOP/s and MFU, logged and summarised.

Train FLOPs per image = 3 x 2 x forward MACs: one forward and a backward that costs two forwards
(the convention of Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1, and
of PaLM's MFU, Chowdhery et al. 2022, appendix B); a MAC is two FLOPs. The forward MACs are the
ones ditlab reports as the paper's "Gflops" (DiT paper, Table 4). Recomputation under gradient
checkpointing is not counted, so MFU stays a property of the model, not of the memory trade-off.

The rates come from Lightning's :class:`~lightning.fabric.utilities.throughput.Throughput`. Unlike
Lightning's ``ThroughputMonitor`` this callback synchronises the GPU only on logging steps (the
monitor does on every step, which stops the CPU from queueing work ahead of the GPU).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops

# Dense (no structured sparsity) peak FLOP/s per GPU where Lightning's table is missing or quotes the
# 2:4-sparsity figure. Sources: NVIDIA H200 datasheet (SXM / NVL columns; the tensor-core figures
# there are "with sparsity", halved here) and the H100 datasheet.
DENSE_PEAKS: dict[str, dict[Any, float]] = {
    "h200 nvl": {torch.float32: 60e12, "tfloat32": 417.5e12, torch.bfloat16: 835.5e12, torch.float16: 835.5e12},
    "h200": {torch.float32: 67e12, "tfloat32": 494.7e12, torch.bfloat16: 989.4e12, torch.float16: 989.4e12},
    "h100 nvl": {torch.float32: 66.9e12, "tfloat32": 494.7e12, torch.bfloat16: 989.4e12, torch.float16: 989.4e12},
}


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """(dense peak FLOP/s of one device for ``dtype``, where the figure came from)."""
    if device.type != "cuda":
        return None, f"unknown for {device.type} (set throughput.peak_tflops)"
    name = torch.cuda.get_device_name(device)
    chip = name.lower()
    for key, table in DENSE_PEAKS.items():  # most specific key first ("h200 nvl" before "h200")
        if all(word in chip for word in key.split()):
            if dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest":
                dtype = "tfloat32"  # type: ignore[assignment]  # TF32 tensor cores run fp32 matmuls
            value = table.get(dtype)
            return value, f"ditlab dense table ({key}, {dtype})" if value else f"no {dtype} figure for {name}"
    value = get_available_flops(device, dtype)
    return (
        (float(value), f"lightning get_available_flops ({name}, {dtype})") if value else (None, f"unknown for {name}")
    )


def compute_dtype(trainer: L.Trainer) -> torch.dtype:
    precision = str(trainer.precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float64 if precision.startswith("64") else torch.float32


class TrainingThroughput(L.Callback):
    """Logs ``perf/images_per_sec``, ``perf/tokens_per_sec``, ``perf/tflops_per_sec`` (all devices)
    and ``perf/mfu`` every ``log_every_n_steps`` over a rolling ``window`` of log steps; after fit,
    :meth:`summary_fields` gives the same over the whole run (the first ``warmup_steps`` excluded)."""

    def __init__(self, window: int = 5, warmup_steps: int = 10, peak_tflops: float | None = None):
        self.window, self.warmup_steps = max(2, int(window)), int(warmup_steps)
        self.peak_override = None if peak_tflops is None else float(peak_tflops) * 1e12
        self._summary: dict[str, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = pl_module.meta["model_stats"]  # measured by train() before the fit: forward GMACs, tokens
        self.flops_per_image = 3 * 2 * float(stats["gflops"]) * 1e9
        self.tokens_per_image = int(stats["tokens"])
        device, dtype = trainer.strategy.root_device, compute_dtype(trainer)
        self.peak, self.peak_source = peak_flops(device, dtype)
        if self.peak_override:
            self.peak, self.peak_source = self.peak_override, "throughput.peak_tflops"
        self.world = trainer.world_size
        self.rates = Throughput(available_flops=self.peak, world_size=self.world, window_size=self.window)
        self.device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        self.precision = str(trainer.precision)
        self._start = self._last = None  # (time, micro-batches, images per device) at a synchronised point
        self._t0 = time.perf_counter()
        self._batches0 = trainer.fit_loop.total_batch_idx

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        batches = trainer.fit_loop.total_batch_idx + 1 - self._batches0
        last = trainer.global_step >= (trainer.max_steps or -1) > 0
        if not (last or trainer.global_step % trainer.log_every_n_steps == 0):
            return  # the step's work may still be queued on the GPU: no timing (and no sync) here
        self._sync(trainer)
        now = time.perf_counter() - self._t0
        images = batches * int(batch[0].shape[0])  # per device
        flops = None if self._last is None else (images - self._last[2]) * self.flops_per_image
        self.rates.update(
            time=now, batches=batches, samples=images, lengths=images * self.tokens_per_image, flops=flops
        )
        if self._start is None and trainer.global_step >= self.warmup_steps:
            self._start = (now, batches, images)
        self._last = (now, batches, images)
        metrics = self.rates.compute()
        if "device/samples_per_sec" in metrics:
            logged = {
                "perf/images_per_sec": metrics["device/samples_per_sec"] * self.world,
                "perf/tokens_per_sec": metrics["device/items_per_sec"] * self.world,
            }
            if "device/flops_per_sec" in metrics:
                logged["perf/tflops_per_sec"] = metrics["device/flops_per_sec"] * self.world / 1e12
            if "device/mfu" in metrics:
                logged["perf/mfu"] = metrics["device/mfu"]
            pl_module.log_dict(logged, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if self._start is None or self._last is None or self._last[0] <= self._start[0]:
            self._summary = {"note": f"run too short to measure (needs > {self.warmup_steps} steps)"}
        else:
            seconds = self._last[0] - self._start[0]
            images = (self._last[2] - self._start[2]) * self.world
            flops_per_sec = images * self.flops_per_image / seconds
            self._summary = {
                "images_per_sec": round(images / seconds, 3),
                "tokens_per_sec": round(images * self.tokens_per_image / seconds, 1),
                "tflops_per_sec": float(f"{flops_per_sec / 1e12:.4g}"),
                "mfu": None if not self.peak else float(f"{flops_per_sec / self.world / self.peak:.4g}"),
                "measured_seconds": round(seconds, 2),
                "measured_steps": trainer.global_step - self.warmup_steps,
            }
        self._summary.update(
            {
                "flops_per_image": self.flops_per_image,
                "flops_formula": "3 x 2 x forward MACs per image (forward + backward; recomputation not counted)",
                "peak_tflops_per_device": None if not self.peak else self.peak / 1e12,
                "peak_source": self.peak_source,
                "device_name": self.device_name,
                "devices": self.world,
                "precision": self.precision,
                "warmup_steps_excluded": self.warmup_steps,
            }
        )

    def summary_fields(self) -> dict[str, Any]:
        return {"throughput": dict(self._summary)}
