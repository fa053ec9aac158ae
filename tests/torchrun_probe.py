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
record = {
    "args": args,
    "world_size": int(os.environ["WORLD_SIZE"]),
    "master_port": os.environ["MASTER_PORT"],
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
}
# seed=1 and seed=2 each wait (up to 60 s) until the other has started: both see the other only if
# the launcher really runs them side by side, however slowly the machine starts processes.
seed = next(a.split("=", 1)[1] for a in args if a.startswith("seed="))
(run_dir / f"rank{rank}.json").write_text(json.dumps(record))  # written again below; a failing job may stop early
(run_dir.parent / f"started_seed{seed}_rank{rank}").touch()
if seed in ("1", "2"):
    partner = run_dir.parent / f"started_seed{3 - int(seed)}_rank{rank}"
    deadline = time.time() + 60
    while not partner.exists() and time.time() < deadline:
        time.sleep(0.1)
    record["saw_partner"] = partner.exists()
(run_dir / f"rank{rank}.json").write_text(json.dumps(record))
deadline = time.time() + 60  # fail only once both ranks have written (torchrun then stops the other one)
while seed in ("2", "3") and not all((run_dir / f"rank{r}.json").exists() for r in (0, 1)) and time.time() < deadline:
    time.sleep(0.1)
if "seed=2" in args:
    print("ditlab: error: probe refused seed 2; set seed=1", file=sys.stderr)
    sys.exit(2)
if "seed=3" in args:
    raise ValueError("probe crashed on seed 3")
if rank == 0:
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "run_name": run_dir.name}))
