"""``make bench`` / ``python -m ditlab.tools.bench``: run the benchmarks, write experiments/*/bench_*.json.

    python -m ditlab.tools.bench                           # every benchmark, default sizes
    python -m ditlab.tools.bench --only latent_cache --batch-size 8 trainer=gpu   # Hydra overrides at the end

A result file is never replaced silently: pass --overwrite to refresh it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from ditlab.config import compose
from ditlab.errors import DitlabError, one_line_errors
from ditlab.provenance import git_commit
from ditlab.tools import bench_flops_startup, bench_latent_cache, bench_step

# name -> (module with add_arguments/run/machine/to_json, result file relative to the repository root)
BENCHMARKS = {
    bench_latent_cache.NAME: (bench_latent_cache, Path("experiments/data/bench_latent_cache.json")),
    bench_step.NAME: (bench_step, Path("experiments/bench/step_overhead.json")),
    bench_flops_startup.NAME: (bench_flops_startup, Path("experiments/bench/flops_startup.json")),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ditlab.tools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these benchmarks")
    parser.add_argument("--out", type=Path, help="result file (with a single benchmark)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing result files")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every composed config")
    for module, _ in BENCHMARKS.values():
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    names = args.only or sorted(BENCHMARKS)
    with one_line_errors():
        targets = {name: (args.out if args.out and len(names) == 1 else BENCHMARKS[name][1]) for name in names}
        for path in targets.values():
            if path.exists() and not args.overwrite:
                raise DitlabError(f"{path} exists; pass --overwrite (make bench ARGS=--overwrite) or --out other.json")
        for name, path in targets.items():
            module = BENCHMARKS[name][0]
            machine = module.machine()
            result = module.run(args, compose)
            result["machine"] = {**machine, "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
            result["command"] = "python -m ditlab.tools.bench " + " ".join(
                shlex.quote(a) for a in (argv or sys.argv[1:])
            )
            result["git_commit"] = git_commit()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(module.to_json(result))
            headline = next((v for k, v in result.items() if k.startswith("ratio_")), None)
            logging.getLogger("ditlab").info("%s: %s -> %s", name, headline, path)


if __name__ == "__main__":
    main()
