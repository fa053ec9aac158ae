"""``ditlab-flops`` wall time as a multiple of ``python -c "import torch"``.

Counting runs on the meta device, so what a user waits for is start-up: the interpreter, torch, Hydra
and whatever else the command imports. Both commands run as fresh processes, alternating (one of each
per repeat, so both see the same machine load), from an empty temporary folder; the result is
``median(ditlab-flops) / median(import torch)`` in wall time, and the same ratio in CPU time (user +
system of the child process: less sensitive to other work on a shared machine), with every time kept. The flops command counts the
paper's 12 configs (the bare ``ditlab-flops``), or what the Hydra overrides at the end choose.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from ditlab.tools.bench_latent_cache import machine, to_json  # noqa: F401  (the bench protocol: machine/to_json)

NAME = "flops_startup"
# The console script's own body (pyproject.toml: ditlab-flops = "ditlab.tools.flops_cli:main").
FLOPS_COMMAND = "import sys; sys.argv[0] = 'ditlab-flops'; from ditlab.tools.flops_cli import main; main()"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(NAME)
    g.add_argument("--startup-repeats", type=int, default=5, help="runs of each command (default 5)")


def timed(command: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(args: argparse.Namespace, compose=None) -> dict[str, Any]:
    torch_command = [sys.executable, "-c", "import torch"]
    flops_command = [sys.executable, "-c", FLOPS_COMMAND, *args.overrides]
    times: dict[str, list[float]] = {
        key: [] for key in ("import_torch_s", "ditlab_flops_s", "import_torch_cpu_s", "ditlab_flops_cpu_s")
    }
    with tempfile.TemporaryDirectory(prefix="ditlab_bench_flops_") as cwd:
        timed(torch_command, cwd)  # warm the file cache once, untimed
        for _ in range(args.startup_repeats):
            for name, command in (("import_torch", torch_command), ("ditlab_flops", flops_command)):
                wall, cpu = timed(command, cwd)
                times[f"{name}_s"].append(round(wall, 3))
                times[f"{name}_cpu_s"].append(round(cpu, 3))
    medians = {key: statistics.median(values) for key, values in times.items()}
    return {
        "benchmark": NAME,
        "flops_overrides": list(args.overrides),
        "repeats": args.startup_repeats,
        "ratio_flops_over_import_torch": round(medians["ditlab_flops_s"] / medians["import_torch_s"], 2),
        "ratio_cpu_flops_over_import_torch": round(medians["ditlab_flops_cpu_s"] / medians["import_torch_cpu_s"], 2),
        **{f"median_{key}": round(value, 3) for key, value in medians.items()},
        "times": times,
    }
