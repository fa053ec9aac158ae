"""hydra/launcher=torchrun: every multirun job as its own torchrun process group, failures recorded."""

import json
import os
import re
from pathlib import Path

import pytest
from conftest import FAST, run_cli
from omegaconf import OmegaConf

from ditlab.errors import DitlabError
from ditlab.sweep.torchrun import gpu_slots, job_error, job_problem, torchrun_command

TESTS = str(Path(__file__).resolve().parent)


def test_command_is_a_single_run_of_the_job_overrides(tmp_path):
    cmd = torchrun_command(
        ["model=S", "model.patch_size=2"],
        tmp_path / "0_run",
        nproc_per_node=4,
        module="ditlab.cli",
        torchrun_args=["--max-restarts=0"],
        python="py",
    )
    assert cmd[:5] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert cmd[5:] == [
        "--tee=3",  # each rank's lines whole, prefixed with its rank, in launcher.log
        f"--log-dir={(tmp_path / '0_run').resolve() / 'torchrun_logs'}",
        "--max-restarts=0",
        "-m",
        "ditlab.cli",
        "model=S",
        "model.patch_size=2",
        f"hydra.run.dir={(tmp_path / '0_run').resolve()}",
    ]
    assert "--multirun" not in cmd and cmd.count("-m") == 2  # python -m torch.distributed.run, -m ditlab.cli


def test_gpu_slots_are_disjoint_and_too_few_gpus_is_refused():
    assert gpu_slots(["0", "1", "2", "3", "4", "5", "6", "7"], 4, 2) == ["0,1,2,3", "4,5,6,7"]
    assert gpu_slots(["3", "5"], 1, 2) == ["3", "5"]
    assert gpu_slots([], 2, 3) == [None, None, None]  # CPU: no split
    with pytest.raises(DitlabError, match="needs 8 GPUs but 4 are visible"):
        gpu_slots(["0", "1", "2", "3"], 4, 2)


def test_too_few_gpus_stop_the_sweep_with_one_line_before_any_job(tmp_path):
    res = run_cli(
        "ditlab-train",
        "-m",
        "hydra/launcher=torchrun",
        "hydra.launcher.gpus=[0]",
        "seed=1,2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("ditlab: error: hydra.launcher")
    assert "Traceback" not in res.stderr and not [p for p in (tmp_path / "sweep").glob("*") if p.is_dir()]


def test_job_trainer_must_match_the_process_count():
    assert job_problem(OmegaConf.create({"devices": 4, "strategy": "ddp"}), 4) is None
    assert "trainer.devices=4" in str(job_problem(OmegaConf.create({"devices": 1, "strategy": "auto"}), 4))
    assert "ddp_spawn" in str(job_problem(OmegaConf.create({"devices": 2, "strategy": "ddp_spawn"}), 2))


def test_errors_are_read_from_the_job_log(tmp_path):
    log = tmp_path / "launcher.log"
    log.write_text("[rank1]: ditlab: error: data.batch_size=3 (global) is not divisible\nChildFailedError:\n")
    err = job_error(log, 1)
    assert isinstance(err, DitlabError) and str(err) == "data.batch_size=3 (global) is not divisible"
    log.write_text(
        "Traceback ...\n[rank0]: RuntimeError: CUDA out of memory\ntorch.distributed.elastic.multiprocessing"
        ".errors.ChildFailedError: \n"
    )
    assert str(job_error(log, 1)).startswith("RuntimeError: CUDA out of memory (rank 0) (torchrun exit status 1")
    # torchrun --tee: both ranks' tracebacks, whole lines each; the lowest rank's last exception is the error
    log.write_text(
        "[default1]:Traceback (most recent call last):\n[default0]:Traceback (most recent call last):\n"
        "[default1]:ValueError: rank one\n[default0]:KeyError: first\n[default0]:ValueError: rank zero\n"
    )
    assert str(job_error(log, 1)).startswith("ValueError: rank zero (rank 0) (torchrun exit status 1")


def test_jobs_run_side_by_side_on_disjoint_gpus_and_failures_are_recorded(tmp_path):
    """Three jobs through the real plugin (discovered by Hydra), two at a time, 2 processes each, on 4
    pretend GPUs; the job module is a probe, so this tests the launcher, not training."""
    res = run_cli(
        "ditlab-train",
        "-m",
        "hydra/launcher=torchrun",
        "trainer=ddp_cpu",
        "hydra.launcher.parallel_jobs=2",
        "hydra.launcher.gpus=[0,1,2,3]",
        "hydra.launcher.module=torchrun_probe",
        "seed=1,2,3",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env={"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])},
        timeout=400,
    )
    assert res.returncode == 1, res.stderr[-3000:]
    assert "1 finished, 2 failed" in res.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1", "2"], res.stderr[-2000:]
    ranks = [[json.loads((j / f"rank{r}.json").read_text()) for r in (0, 1)] for j in jobs]
    for (seed, job), (r0, r1) in zip(enumerate(jobs, 1), ranks):
        assert r0["world_size"] == r1["world_size"] == 2 and r0["master_port"] == r1["master_port"]
        assert r0["args"] == ["trainer=ddp_cpu", f"seed={seed}", f"hydra.run.dir={job.resolve()}"]
        assert r0["cuda_visible_devices"] == r1["cuda_visible_devices"] in ("0,1", "2,3")
    assert {ranks[0][0]["cuda_visible_devices"], ranks[1][0]["cuda_visible_devices"]} == {"0,1", "2,3"}
    assert ranks[0][0]["saw_partner"] and ranks[1][0]["saw_partner"]  # jobs 0 and 1 ran side by side
    summaries = [json.loads((j / "summary.json").read_text()) for j in jobs]
    assert [s["status"] for s in summaries] == ["finished", "failed", "failed"]
    assert summaries[1]["error"] == "probe refused seed 2; set seed=1" and summaries[1]["error_type"] == "DitlabError"
    # both ranks raise; whichever torchrun saw fail first may be the only traceback in the log
    assert re.match(r"ValueError: probe crashed on seed 3 \(rank [01]\) \(torchrun", summaries[2]["error"])
    assert summaries[2]["job"] == 2
    assert summaries[2]["overrides"] == ["trainer=ddp_cpu", "seed=3"]


@pytest.mark.slow  # ~40 s on 2 quiet cores, 2 min loaded; the launcher path is covered by the probe test above
def test_two_jobs_train_as_two_process_gloo_groups(tmp_path):
    """The real thing on CPU: 2 jobs x 2 gloo processes through torchrun, each a DDP run of ditlab.cli."""
    res = run_cli(
        "ditlab-train",
        "-m",
        "hydra/launcher=torchrun",
        "trainer=ddp_cpu",
        "hydra.launcher.gpus=[]",
        "hydra.launcher.parallel_jobs=2",
        *FAST,
        "data.batch_size=8",
        "model.patch_size=2,4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 finished, 0 failed" in res.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job, patch in zip(jobs, (2, 4)):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["patch_size"] == patch and summary["steps"] == 4
        assert summary["images_seen"] == 4 * 8  # the global batch, split over the two processes
        log = (job / "launcher.log").read_text()
        # Lightning: a 2-process DDP group (its start-up line comes from rank 0 only); both ranks ran
        assert "MEMBER: 1/2" in log and "[default1]:" in log, log[-2000:]
        assert (job / "checkpoints" / "last.ckpt").is_file()
