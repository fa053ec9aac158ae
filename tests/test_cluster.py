"""Through a real Slurm scheduler: the throwaway two-node cluster of tools/slurm_cluster.sh.

Run with ``make test-cluster`` (root: it installs Debian's slurm and munge packages, starts the
cluster, runs these tests and stops it). Without a running cluster every test here is skipped
with the reason; with ``DITLAB_REQUIRE_CLUSTER=1`` (set by ``make test-cluster``) that is a failure.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST

pytestmark = pytest.mark.cluster

CLUSTER_DIR = Path(os.environ.get("DITLAB_SLURM_DIR", "/tmp/ditlab-slurm"))
BIN = Path(sys.executable).parent
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL")
SWEEP_STEPS = [*FAST, "trainer.max_steps=4"]
# A run long enough to be interrupted between its first step checkpoint and its end.
LONG = [*FAST, "trainer.max_steps=120", "checkpoint.every_n_steps=10", "checkpoint.keep=1"]


def cluster_problem(env: dict[str, str]) -> str | None:
    if shutil.which("sbatch") is None:
        return "Slurm is not installed (make test-cluster installs it, as root)"
    if not Path(env["SLURM_CONF"]).is_file():
        return f"no test cluster ({env['SLURM_CONF']} missing): run `make test-cluster` or tools/slurm_cluster.sh start"
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=env, capture_output=True, text=True, timeout=30)
    up = re.findall(r"^n[12] (?:idle|alloc|mix)", out.stdout, flags=re.M)
    if out.returncode != 0 or len(up) != 2:
        return f"the test cluster is not up (sinfo: {(out.stdout + out.stderr).strip()!r})"
    return None


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    # One thread per process: each emulated node has one CPU (torch's default thread pool oversubscribes).
    env = {**os.environ, "SLURM_CONF": str(CLUSTER_DIR / "slurm.conf"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    problem = cluster_problem(env)
    if problem:
        if os.environ.get("DITLAB_REQUIRE_CLUSTER"):
            pytest.fail(problem)
        pytest.skip(problem)
    return env


@pytest.fixture
def env(slurm_env, tmp_path) -> dict[str, str]:
    return {**slurm_env, "DITLAB_ROOT": str(tmp_path), "DITLAB_CACHE": str(tmp_path / "cache")}


def train_cli(*args: str, env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ditlab-train"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def sbatch(env: dict[str, str], cwd: Path, name: str, command: str, *options: str) -> str:
    """Submit ``srun <command>`` as a batch job; its output goes to ``cwd/<name>.out``."""
    script = cwd / f"{name}.sh"
    script.write_text(f"#!/bin/bash\nexec srun {command}\n")
    out = subprocess.run(
        [
            "sbatch",
            "--open-mode=append",  # a requeued job appends its output: both attempts in one file
            "--parsable",
            f"--job-name={name}",
            f"--output={cwd / name}.out",
            f"--chdir={cwd}",
            *options,
            script,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


def job_info(env: dict[str, str], job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True, timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_job(env: dict[str, str], job: str, timeout: float = 400) -> dict[str, str]:
    held_since: list[float] = []

    def ended() -> dict[str, str] | None:
        info = job_info(env, job)
        if info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime" and info.get("Restarts") != "0":
            # Slurm holds a requeued batch job for two minutes so that its last attempt can finish on its
            # nodes. Shorten that wait, but only once the nodes are no longer completing the last attempt.
            held_since.append(time.monotonic())
            nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True)
            if time.monotonic() - held_since[0] > 10 and "comp" not in nodes.stdout:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, timeout=30)
        return info if info.get("JobState") in ENDED else None

    return wait_until(ended, timeout, f"job {job} to end")


def train_command(run_name: str, *overrides: str) -> str:
    return " ".join([str(BIN / "ditlab-train"), *LONG, f"run_name={run_name}", *overrides])


def run_dir(env: dict[str, str], name: str) -> Path:
    return Path(env["DITLAB_ROOT"]) / "runs" / name


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} of {len(wa)} tensors differ, e.g. {different[:3]}"


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_sweep_through_slurm_cpu_launcher_and_report(env, tmp_path):
    sweep = tmp_path / "sweep"
    done = train_cli(
        "-m", "hydra/launcher=slurm_cpu", *SWEEP_STEPS, "seed=0,1", f"hydra.sweep.dir={sweep}", env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 finished, 0 failed" in done.stderr
    assert "Bypassing sacct error" not in done.stderr  # the cluster has no accounting: states come from squeue
    runs = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    assert [summary(p)["status"] for p in runs] == ["finished", "finished"]
    report = subprocess.run(
        [str(BIN / "ditlab-report"), str(sweep)], env=env, capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert (sweep / "report").is_dir() and any((sweep / "report").iterdir())


def test_two_node_ddp_job_trains_and_writes_each_file_once(env, tmp_path):
    sweep = tmp_path / "sweep"
    done = train_cli(
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.nodes=2",
        "trainer.num_nodes=2",
        "trainer.strategy=ddp",
        *SWEEP_STEPS,
        f"hydra.sweep.dir={sweep}",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = [p for p in sweep.iterdir() if (p / "summary.json").exists()]
    result = summary(run)
    assert result["status"] == "finished" and result["steps"] == 4
    assert result["device_hours"] == pytest.approx(result["fit_seconds"] * 2 / 3600, rel=0.01)  # two processes
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert {re.search(r"_(\d)_log\.out$", p.name).group(1) for p in logs} == {"0", "1"}  # a task on each node
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt"]  # no -v1 copies, no .tmp
    assert [p.name for p in (run / "logs").iterdir()] == ["version_0"]  # one logger, rank 0's
    with open(run / "metrics.csv", newline="") as f:
        loss_steps = [row["step"] for row in csv.DictReader(f) if row.get("train/loss")]
    assert sorted(loss_steps, key=int) == ["1", "2", "3", "4"]  # each step logged once


@pytest.mark.parametrize("nodes", [1, 2])
def test_scontrol_requeue_resumes_bitwise(env, tmp_path, nodes):
    if nodes == 1:  # side by side, one node each
        ddp, where = "", (["--nodelist=n2"], ["--nodelist=n1"])
    else:  # 2 nodes x 1 process (gloo); the requeued job starts once the reference has finished
        ddp, where = (
            "trainer=ddp_cpu trainer.devices=1 trainer.num_nodes=2",
            (["-N2", "--ntasks-per-node=1"], ["-N2", "--ntasks-per-node=1"]),
        )
    reference = sbatch(env, tmp_path, "reference", train_command("ref", ddp), *where[0])
    job = sbatch(env, tmp_path, "requeued", train_command("req", ddp), *where[1], "--requeue")
    wait_until(lambda: list((run_dir(env, "req") / "checkpoints").glob("step*.ckpt")), 400, "the first checkpoint")
    subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=30)
    info = wait_job(env, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    assert wait_job(env, reference)["JobState"] == "COMPLETED"
    req = run_dir(env, "req")
    resumes = [json.loads(line) for line in (req / "resumes.jsonl").read_text().splitlines()]
    assert len(resumes) == 1 and 0 < resumes[0]["step"] < 120  # resumed by itself, mid-run
    assert summary(req)["status"] == "finished" and summary(req)["steps"] == 120
    assert_bitwise_equal(req / "checkpoints/last.ckpt", run_dir(env, "ref") / "checkpoints/last.ckpt")
    assert (req / "samples.npz").read_bytes() == (run_dir(env, "ref") / "samples.npz").read_bytes()


def test_rerun_into_sweep_folder_skips_finished_and_resumes_the_rest(env, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=slurm_cpu", *SWEEP_STEPS, "seed=0,1", f"hydra.sweep.dir={sweep}", "ckpt_path=auto"]
    first = train_cli(*args, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    finished, unfinished = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    finished_bytes = {p.name: p.read_bytes() for p in finished.rglob("*") if p.is_file() and p.name != "cli.log"}
    final = weights(unfinished / "checkpoints/last.ckpt")
    # The second job as if stopped after step 2: its step-2 checkpoint is its last, no summary yet.
    shutil.copy(unfinished / "checkpoints/step0000002.ckpt", unfinished / "checkpoints/last.ckpt")
    (unfinished / "summary.json").unlink()
    (unfinished / "checkpoints/step0000004.ckpt").unlink()
    again = train_cli(*args, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished, 0 failed" in again.stderr
    assert {p.name: p.read_bytes() for p in finished.rglob("*") if p.is_file() and p.name != "cli.log"} == (
        finished_bytes
    )  # untouched: not trained, sampled or summarised again
    assert "already finished its 4 steps: skipped" in (finished / "cli.log").read_text()
    assert not (finished / "resumes.jsonl").exists()
    (resume,) = [json.loads(line) for line in (unfinished / "resumes.jsonl").read_text().splitlines()]
    assert resume["step"] == 2 and summary(unfinished)["steps"] == 4
    resumed = weights(unfinished / "checkpoints/last.ckpt")
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def rank_pid(job: str, rank: int) -> int | None:
    """The pid of the process SLURM started as ``rank`` of ``job`` (read from /proc: same host)."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"SLURM_JOB_ID={job}".encode() in environ and f"SLURM_PROCID={rank}".encode() in environ:
            if b"ditlab-train" in cmdline:
                return int(proc.name)
    return None


def test_killing_one_rank_ends_the_job_with_one_line(env, tmp_path):
    ddp = "trainer=ddp_cpu trainer.devices=1 trainer.num_nodes=2"
    job = sbatch(env, tmp_path, "ddp", train_command("ddp", ddp), "-N2", "--ntasks-per-node=1")
    wait_until(lambda: list((run_dir(env, "ddp") / "checkpoints").glob("step*.ckpt")), 180, "the first checkpoint")
    os.kill(wait_until(lambda: rank_pid(job, 1), 30, "rank 1's process"), 9)
    killed = time.monotonic()
    assert wait_job(env, job, timeout=60)["JobState"] == "FAILED"
    assert time.monotonic() - killed < 30  # gloo notices within seconds; no hang until a timeout
    output = (tmp_path / "ddp.out").read_text()
    (line,) = [line for line in output.splitlines() if line.startswith("ditlab: error:")]
    assert "rank 0 on n1 lost rank 1 on n2 of the 2-process DDP group" in line
    assert " run_name=ddp " in line and line.endswith(" ckpt_path=last")
    assert "Traceback" not in output and "GLHF" not in output


def test_time_limit_signal_checkpoints_requeues_and_completes(env, tmp_path):
    # The limit's warning signal (--signal=USR1@N), sent as Slurm sends it at N s before the limit: to every
    # step's tasks. Sent with scancel once training runs, so the test does not depend on this machine's speed.
    job = sbatch(env, tmp_path, "limited", train_command("limited"), "--time=10", "--signal=USR1@60", "--requeue")
    wait_until(lambda: list((run_dir(env, "limited") / "checkpoints").glob("step*.ckpt")), 180, "the first checkpoint")
    subprocess.run(["scancel", "--signal=USR1", job], env=env, check=True, timeout=30)
    info = wait_job(env, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info  # requeued by ditlab's rank 0
    run = run_dir(env, "limited")
    (resume,) = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert 0 < resume["step"] < 120 and summary(run)["steps"] == 120 and summary(run)["status"] == "finished"
    output = (tmp_path / "limited.out").read_text()
    assert "received SIGUSR1: stopping after this step" in output and "scontrol requeue" in output
