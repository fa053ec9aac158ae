"""Stands in for ``python -m ditlab.cli`` under the torchrun launcher (hydra.launcher.module=torchrun_probe):
each rank records what it was given; seed=2 fails with ditlab's one-line error, seed=3 crashes."""

import json
import os
import sys
import time
from pathlib import Path

args = sys.argv[1:]
run_dir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")))
run_dir.mkdir(parents=True, exist_ok=True)
rank = int(os.environ["RANK"])
record = {"args": args, "world_size": int(os.environ["WORLD_SIZE"]), "master_port": os.environ["MASTER_PORT"],
          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": time.time()}
time.sleep(1.0)  # long enough for side-by-side jobs to overlap
record["end"] = time.time()
(run_dir / f"rank{rank}.json").write_text(json.dumps(record))
if "seed=2" in args:
    print("ditlab: error: probe refused seed 2; set seed=1", file=sys.stderr)
    sys.exit(2)
if "seed=3" in args:
    raise ValueError("probe crashed on seed 3")
if rank == 0:
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "run_name": run_dir.name}))
