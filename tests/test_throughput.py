"""Throughput and MFU: the peak-FLOPs table (H200 naming and sparsity traps) and the numbers a run writes."""

import csv
import json

import pytest
import torch

from ditlab.training.throughput import peak_flops
from ditlab.training.train import train


@pytest.mark.parametrize(
    "name,dtype,matmul,expected",
    [
        # Lightning's table has no plain "NVIDIA H200" and quotes its H200 / H100 NVL peaks with 2:4 sparsity.
        ("NVIDIA H200", torch.bfloat16, "high", 989.4e12),
        ("NVIDIA H200", torch.float32, "high", 494.7e12),  # fp32 matmuls on TF32 tensor cores
        ("NVIDIA H200", torch.float32, "highest", 67e12),
        ("NVIDIA H200 NVL", torch.bfloat16, "high", 835.5e12),
        ("NVIDIA H100 NVL", torch.bfloat16, "high", 989.4e12),
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, "high", 989.4e12),  # from Lightning's table (dense already)
        ("NVIDIA A100-SXM4-80GB", torch.bfloat16, "high", 312e12),
    ],
)
def test_peak_flops_are_dense_figures_for_the_named_gpu(monkeypatch, name, dtype, matmul, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(matmul)
    try:
        value, source = peak_flops(torch.device("cuda", 0), dtype)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert value == pytest.approx(expected) and source


def test_peak_flops_unknown_on_cpu_points_at_the_override():
    value, source = peak_flops(torch.device("cpu"), torch.float32)
    assert value is None and "throughput.peak_tflops" in source


def test_a_run_logs_and_summarises_throughput(train_cfg, tmp_path):
    cfg = train_cfg(
        "trainer.max_steps=8",
        "trainer.log_every_n_steps=2",
        "callbacks.throughput.warmup_steps=2",
        "callbacks.throughput.window=2",
        "callbacks.throughput.peak_tflops=0.5",
    )
    summary = train(cfg)
    tp = json.loads((tmp_path / "run" / "summary.json").read_text())["throughput"]
    assert tp == summary["throughput"]
    assert tp["flops_per_image"] == pytest.approx(6 * summary["gflops"] * 1e9)  # 3 x 2 x forward MACs
    assert tp["measured_steps"] == 6 and tp["images_per_sec"] > 0
    assert tp["tokens_per_sec"] == pytest.approx(tp["images_per_sec"] * summary["tokens"], rel=1e-3)
    assert tp["tflops_per_sec"] == pytest.approx(tp["images_per_sec"] * tp["flops_per_image"] / 1e12, rel=1e-3)
    assert tp["mfu"] == pytest.approx(tp["tflops_per_sec"] / 0.5, rel=2e-3)  # both rounded to 4 digits; peak 0.5
    assert tp["peak_source"] == "throughput.peak_tflops" and tp["device_name"] == "cpu"
    # one process: device-hours are the fit's seconds (fit_seconds is rounded to 0.01 s, device_hours to 6 digits)
    assert summary["device_hours"] * 3600 == pytest.approx(summary["fit_seconds"], abs=0.005 + 1e-5)
    assert summary["device_hours"] > 0 and summary["device_type"] == "cpu"
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("perf/mfu")]
    assert logged and all(float(r["perf/mfu"]) > 0 and float(r["perf/images_per_sec"]) > 0 for r in logged)
