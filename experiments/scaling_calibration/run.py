"""Coverage of the report's nominal 95 % intervals on synthetic sweeps with known laws.

    .venv/bin/python experiments/scaling_calibration/run.py            # every case, ~10 min on one core
    .venv/bin/python experiments/scaling_calibration/run.py --quick    # 100 sweeps per case

Writes calibration.json and README.md next to this file. Cases and laws: ditlab.report.calibration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from ditlab.report.calibration import CASES, HELD_OUT, IRREDUCIBLE, JOINT, JOINT_D, JOINT_G, POWER, coverage

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweeps", type=int, default=1000, help="sweeps per final-value case")
    parser.add_argument("--quick", action="store_true", help="100 sweeps per case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results, start = [], time.time()
    for i, case in enumerate(CASES):
        sweeps = 100 if args.quick else case.get("sweeps", args.sweeps)
        t0 = time.time()
        one = {**case, **coverage(case, sweeps, args.seed + i), "seconds": round(time.time() - t0, 1)}
        results.append(one)
        cov = ", ".join(f"{k} {100 * v:.1f} %" for k, v in one["coverage"].items())
        print(f"{case['name']}: {cov} ({sweeps} sweeps, {one['seconds']} s)", flush=True)
    command = "python experiments/scaling_calibration/run.py " + " ".join(sys.argv[1:])
    machine = f"{cpu_name()}, {os.cpu_count()} cores ({platform.system()} {platform.machine()}), one process"
    record = {
        "command": command.strip(),
        "machine": machine,
        "seconds": round(time.time() - start, 1),
        "laws": {
            "power_law": POWER,
            "irreducible": IRREDUCIBLE,
            "joint": JOINT,
            "joint_G": JOINT_G,
            "joint_D": JOINT_D,
        },
        "held_out": HELD_OUT,
        "cases": results,
    }
    (HERE / "calibration.json").write_text(json.dumps(record, indent=2) + "\n")
    (HERE / "README.md").write_text(readme(record))


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def readme(record: dict) -> str:
    lines = [
        "# Do the report's 95 % intervals cover 95 %?",
        "",
        "Synthetic sweeps that follow a known law, fitted exactly as `ditlab-report` fits them; each cell is the",
        "share of sweeps whose nominal 95 % interval contains the true value (target 93–97 %; the binomial",
        "standard error of a share near 95 % is 0.7 points at 1000 sweeps, 1.1 at 400, 1.5 at 200).",
        "",
        f"Command: `{record['command']}` — {record['seconds']:.0f} s on {record['machine']}, no GPU, "
        "shared with other jobs. Numbers: `calibration.json`.",
        "",
        "| case | sweeps | quantity: coverage |",
        "|---|---|---|",
    ]
    for c in record["cases"]:
        cov = "; ".join(f"{k}: **{100 * v:.1f} %**" for k, v in c["coverage"].items())
        lines.append(f"| {c['name']} | {c['sweeps'] - c['no_fit']} | {cov} |")
    lines += [
        "",
        "- **Final-value fits** (`ditlab.report.fits`): n runs at C = 10³…10⁶, 1.5 % log-normal run-to-run",
        f"  scatter; pure law y = {POWER['a']}·C^{POWER['b']}, irreducible y = {IRREDUCIBLE['e']} + "
        f"{IRREDUCIBLE['a']}·C^{IRREDUCIBLE['b']} (fitted with that form). `new run xK`: a held-out run at K times the",
        "  largest fitted C, inside its prediction interval. `t`: the linearised fit with t quantiles on n − p",
        "  degrees of freedom (the report's method); `percentile bootstrap (before)`: the method it replaced",
        "  (400 resamples).",
        f"- **Joint law** (`ditlab.report.law`): L = {JOINT['E']} + {JOINT['A']}·G^-{JOINT['alpha']} + "
        f"{JOINT['B']}·D^-{JOINT['beta']}, 6 runs (G = {JOINT_G[0]}…{JOINT_G[-1]} Gflops) × 5 evaluations",
        f"  (D = {JOINT_D[0]}…{JOINT_D[-1]} images), 1 % log-normal scatter per evaluation; the second case adds a",
        "  1 % offset shared by all evaluations of a run (a seed's luck), which the variance-components",
        "  sandwich covariance allows for. `new run, G x2`: the final loss of a run twice the largest G;",
        "  `L_opt(C)`: the law's optimum at that run's compute.",
        "- **Joint-law intervals**: the covariance is the unbiased sum of a within-run and a between-run",
        "  mean square (the run variance is not truncated at zero: truncating made the intervals depend on",
        "  whether it happened to be positive), and each quantity's t quantile has Satterthwaite degrees of",
        "  freedom between runs − 3 and n − runs − 2, rounded down. Unrounded, L_opt(C) (3.4 degrees of",
        "  freedom, nearly all between runs) covered 92.2 %. The former rule (runs − 3 for every quantity",
        "  once a run offset was estimated) covered a at 99.2 % and beta at 97.2 % with offsets (400 sweeps).",
        "- **Across seeds** (three seeds of 1000 sweeps per joint case, the table's and two more): 93.0–95.1 %",
        "  without offsets, 92.1–95.7 % with; the one cell below 93 % is a new run with offsets (92.1 %,",
        "  93.6 %, 93.6 %).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
