"""What a run guarantees (docs/runs.md): bitwise resume from any checkpoint (mid-epoch, epoch
boundary, after kill -9 or SIGTERM), one live process group per run directory, resume config
rules, and a divergence guard that never lets diverged weights reach a checkpoint."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_train

from ditlab.checkpoints.checkpoint_io import newest_complete_checkpoint
from ditlab.checkpoints.run_lock import LOCK_FILE
from ditlab.errors import DitlabError
from ditlab.objectives.base import OBJECTIVES
from ditlab.objectives.ddpm import DDPMObjective
from ditlab.training.train import train

TESTS = Path(__file__).resolve().parent
# 1,797 digits at global batch 256: 7 steps per epoch, so 12 steps cross one epoch boundary.
EXACT = [
    "data.batch_size=256",
    "trainer.max_steps=12",
    "checkpoint.every_n_steps=1",
    "final_samples.num_samples=10",
    "final_samples.batch_size=10",
]


def run_in_subprocess(
    out: Path, *overrides: str, slow_from_step: int = 3, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``train()`` in its own process (to be killed), slowed to 0.3 s per step from ``slow_from_step`` so a
    signal reliably lands mid-run."""
    script = out.parent / f"{out.name}_run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import compose_train
        from ditlab.training.module import DiffusionModule
        from ditlab.training.train import train
        step = DiffusionModule.optimizer_step
        def slow_step(self, *a, **k):
            step(self, *a, **k)
            if self.global_step >= {slow_from_step}:
                time.sleep(0.3)
        DiffusionModule.optimizer_step = slow_step
        train(compose_train(*{list(overrides)!r}, output_dir={str(out)!r}))
    """)
    )
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read()[-2000:]}"
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.05)


def final_state(run: Path) -> dict:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    losses = {}
    with open(run / "metrics.csv") as f:
        import csv

        for row in csv.DictReader(f):
            if row.get("train/loss"):
                losses[int(row["step"])] = row["train/loss"]
    return {
        "step": ckpt["global_step"],
        "weights": ckpt["state_dict"],
        "optimizer": ckpt["optimizer_states"],
        "losses": losses,
    }


def assert_same_run(resumed: dict, reference: dict, from_step: int) -> None:
    assert resumed["step"] == reference["step"]
    for key, value in reference["weights"].items():  # model and EMA
        assert torch.equal(resumed["weights"][key], value), key
    for a, b in zip(resumed["optimizer"][0]["state"].values(), reference["optimizer"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    # A loss is logged at the step count after its optimizer step: those after the checkpoint are > from_step.
    resumed_losses = {s: v for s, v in resumed["losses"].items() if s > from_step}
    assert resumed_losses == {s: v for s, v in reference["losses"].items() if s > from_step}  # logged values, as text


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce bitwise."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(compose_train(*EXACT, output_dir=out))
    return out


@pytest.mark.parametrize("step", [4, 7], ids=["mid_epoch", "epoch_boundary"])
def test_resume_from_any_checkpoint_is_bitwise(reference, tmp_path, step):
    resumed = tmp_path / "resumed"
    summary = train(compose_train(*EXACT, f"ckpt_path={reference}/checkpoints/step{step:07d}.ckpt", output_dir=resumed))
    assert summary["steps"] == 12 and summary["images_seen"] == 12 * 256
    assert_same_run(final_state(resumed), final_state(reference), from_step=step)


def test_kill_9_mid_epoch_then_resume_is_bitwise(reference, tmp_path):
    run = tmp_path / "run"
    proc = run_in_subprocess(run, *EXACT)
    wait_for(run / "checkpoints" / "step0000004.ckpt", proc)
    proc.kill()  # SIGKILL: nothing runs after it
    proc.wait()
    # The kernel released the dead process's lock: the plain rerun resumes from the newest complete checkpoint.
    # Its step is read now: the file may be last.ckpt (it wins a tie), which the rerun overwrites.
    path, ckpt = newest_complete_checkpoint(run / "checkpoints")
    step = int(ckpt["global_step"])
    summary = train(compose_train(*EXACT, "ckpt_path=last", output_dir=run))
    assert summary["resumed_from"] == str(path)
    assert 0 < step < 12  # killed mid-run
    assert_same_run(final_state(run), final_state(reference), from_step=step)
    assert not list(run.rglob("*.tmp-*"))  # no temporaries of an interrupted save survive the next attempt


def test_sigterm_saves_exits_nonzero_and_continues_bitwise(reference, tmp_path):
    run = tmp_path / "run"
    proc = run_in_subprocess(run, *EXACT)
    wait_for(run / "checkpoints" / "step0000004.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 4 <= summary["steps"] < 12
    assert not (run / LOCK_FILE).exists()  # released: the next attempt needs no takeover
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == summary["steps"]
    done = train(compose_train(*EXACT, "ckpt_path=last", output_dir=run))
    assert done["status"] == "finished"
    assert_same_run(final_state(run), final_state(reference), from_step=summary["steps"])


def test_slurm_preemption_requeues_the_job_and_the_requeued_job_resumes_itself(reference, tmp_path, monkeypatch):
    """SIGUSR1 (sbatch --signal=USR1@90) inside a SLURM job: full checkpoint, ``scontrol requeue <job>``,
    non-zero exit; the requeued job reruns the same command (no ckpt_path) and continues bitwise."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    fake = bin_dir / "scontrol"  # records how it was called, as the real one would requeue the job
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    run = tmp_path / "run"
    job = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = run_in_subprocess(run, *EXACT, env=job)
    wait_for(run / "checkpoints" / "step0000004.ckpt", proc)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == 128 + signal.SIGUSR1
    assert calls.read_text().split() == ["requeue", "4242"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 4 <= summary["steps"] < 12
    # The requeued job: same id, SLURM_RESTART_COUNT > 0, the same command (ckpt_path unset).
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    done = train(compose_train(*EXACT, output_dir=run))
    assert done["status"] == "finished" and done["steps"] == 12
    assert_same_run(final_state(run), final_state(reference), from_step=summary["steps"])


# ----------------------------------------------------------------------------- the lock
def test_without_flock_a_live_pid_is_refused_and_a_stale_lock_taken_over_only_on_request(
    train_cfg, tmp_path, monkeypatch
):
    """File systems that refuse flock (ENOLCK): the lock file alone, with a pid check (the flock path:
    tests/test_run_transaction.py)."""
    import errno

    from ditlab.checkpoints import run_lock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    run = tmp_path / "run"
    train(train_cfg())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    holder = subprocess.Popen(["sleep", "3600"])  # killed below
    try:
        (run / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now"}))
        for extra in ((), ("overwrite=true",), ("ckpt_path=last", "trainer.max_steps=6")):
            with pytest.raises(DitlabError, match=f"in use by a live run: pid {holder.pid}"):
                train(train_cfg(*extra))
    finally:
        holder.kill()
        holder.wait()
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != LOCK_FILE}
    assert after == {k: v for k, v in before.items()}  # overwrite=true touched nothing while the run was live
    with pytest.raises(DitlabError, match="stale lock.*no longer running.*takeover_lock=true"):
        train(train_cfg("ckpt_path=last", "trainer.max_steps=6"))
    assert train(train_cfg("ckpt_path=last", "trainer.max_steps=6", "takeover_lock=true"))["steps"] == 6
    assert not (run / LOCK_FILE).exists()


def test_two_launches_at_once_one_is_refused(tmp_path):
    from ditlab.checkpoints.run_lock import RunLock

    with RunLock(tmp_path):
        with pytest.raises(DitlabError, match="in use by a live run"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- resume rules
def test_resume_keeps_the_run_config_and_records_allowed_changes(train_cfg, tmp_path):
    run = tmp_path / "run"
    train(train_cfg())
    config = (run / "config.yaml").read_text()
    with pytest.raises(DitlabError, match=r"changes model.hidden_size \(32 -> 64\).*init_from="):
        train(train_cfg("ckpt_path=last", "model.hidden_size=64"))
    with pytest.raises(DitlabError, match=r"changes data.seed \(0 -> 1\), seed \(0 -> 1\);"):
        train(train_cfg("ckpt_path=last", "seed=1", "trainer.max_steps=6"))
    assert (run / "config.yaml").read_text() == config and not (run / "resumes.jsonl").exists()
    train(train_cfg("ckpt_path=last", "trainer.max_steps=6", "optim.lr=1e-3"))
    assert (run / "config.yaml").read_text() == config  # history is not rewritten
    entry = json.loads((run / "resumes.jsonl").read_text())
    assert entry["step"] == 4 and entry["changes"] == {"trainer.max_steps": [4, 6], "optim.lr": [2e-3, 1e-3]}
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-3  # the recorded change is the one applied
    assert ckpt["ditlab"]["config"]["optim"]["lr"] == 1e-3


# ----------------------------------------------------------------------------- divergence
@OBJECTIVES.register("explodes_at_step_3")
class ExplodesAtStep3(DDPMObjective):
    """A finite loss of ~1e8 from the fourth training call: what a blown-up run logs."""

    name = "explodes_at_step_3"
    calls = 0

    def loss(self, model_fn, x0, model_kwargs):
        terms = super().loss(model_fn, x0, model_kwargs)
        if torch.is_grad_enabled():
            ExplodesAtStep3.calls += 1
            if ExplodesAtStep3.calls > 3:
                terms["loss"] = terms["loss"] * 1e8
        return terms


@OBJECTIVES.register("ruins_weights_at_step_3")
class RuinsWeightsAtStep3(DDPMObjective):
    """The fourth training step's loss is normal, but the step leaves ruined weights behind."""

    name = "ruins_weights_at_step_3"
    calls = 0

    def loss(self, model_fn, x0, model_kwargs):
        terms = super().loss(model_fn, x0, model_kwargs)
        if torch.is_grad_enabled():
            RuinsWeightsAtStep3.calls += 1
            if RuinsWeightsAtStep3.calls == 4:
                for p in model_fn.parameters():
                    p.data.mul_(1e4)  # .data: autograd does not notice; the update then lands on ruined weights
        return terms


def checkpoint_steps(run: Path) -> dict[str, int]:
    return {p.name: torch.load(p, weights_only=True)["global_step"] for p in (run / "checkpoints").glob("*.ckpt")}


def test_exploding_loss_stops_before_a_diverged_checkpoint(train_cfg, tmp_path):
    ExplodesAtStep3.calls = 0
    with pytest.raises(
        DitlabError,
        match=r"loss became [\d.]+e\+0[78] at step 3 \(diverged.*last good checkpoint is "
        r".*step0000002.ckpt.*optim.lr.*gradient_clip_val",
    ):
        train(train_cfg("objective.name=explodes_at_step_3", "trainer.max_steps=6"))
    assert max(checkpoint_steps(tmp_path / "run").values()) == 2
    assert not (tmp_path / "run" / "summary.json").exists()


def test_weights_ruined_by_a_step_never_reach_a_checkpoint(train_cfg, tmp_path):
    RuinsWeightsAtStep3.calls = 0
    # The loss history is checked only every 50 steps here: the check before saving catches it alone.
    with pytest.raises(DitlabError, match=r"step 4 produced .*weights.*diverged.*step0000002.ckpt"):
        train(
            train_cfg("objective.name=ruins_weights_at_step_3", "trainer.max_steps=6", "trainer.log_every_n_steps=50")
        )
    assert checkpoint_steps(tmp_path / "run") == {"step0000002.ckpt": 2, "last.ckpt": 2}


# ----------------------------------------------------------------------------- bad inputs
def bad_checkpoints(tmp_path: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {"random": os.urandom(5000), "truncated": data[: len(data) // 2], "text": b"not a checkpoint\n"}
    for name, content in files.items():
        (tmp_path / f"{name}.ckpt").write_bytes(content)
    return {name: tmp_path / f"{name}.ckpt" for name in files}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "run"
    train(compose_train(output_dir=out))
    return out


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr=-1", "optim.lr=-1 is not valid: give a number >= 0"),
        ("checkpoint.every_n_steps=-5", "checkpoint.every_n_steps=-5 is not valid: give an integer >= 1"),
        ("ema.decay=2", "ema.decay=2 is not valid: give a number >= 0 and <= 1"),
        ("optim.betas=[0.9,1.5]", r"optim.betas=\[0.9,1.5\] is not valid: give two numbers"),
        ("divergence.max_loss=0", "divergence.max_loss=0 is not valid: give a number > 0"),
    ],
)
def test_bad_options_fail_in_one_line_before_anything_is_written(train_cfg, tmp_path, override, message):
    with pytest.raises(DitlabError, match=message):
        train(train_cfg(override))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["random", "truncated", "text", "other_size"])
def test_a_bad_checkpoint_is_refused_in_one_line_before_anything_is_written(small_run, train_cfg, tmp_path, kind):
    if kind == "other_size":
        path, message = small_run / "checkpoints" / "last.ckpt", r"changes model.hidden_size \(32 -> 48\)"
        extra = ("model.hidden_size=48",)
    else:
        path = bad_checkpoints(tmp_path, small_run / "checkpoints" / "last.ckpt")[kind]
        message, extra = "is not a readable PyTorch checkpoint.*damaged, truncated", ()
    with pytest.raises(DitlabError, match=message) as info:
        train(train_cfg(f"ckpt_path={path}", *extra))
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_config_imports_nothing_and_resolves_nothing(small_run, tmp_path, monkeypatch):
    from ditlab.cli import compose
    from ditlab.tools import sample as sample_tool

    marker = tmp_path / "imported"
    (tmp_path / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DITLAB_TEST_SECRET", "s3cret")
    ckpt = torch.load(small_run / "checkpoints" / "last.ckpt", weights_only=True)
    cases = {"module": ("block", "module", "evil_plugin"), "env": ("run_name", None, "${oc.env:DITLAB_TEST_SECRET}")}
    for name, (group, key, value) in cases.items():
        evil = json.loads(json.dumps(ckpt["ditlab"]))
        if key:
            evil["config"][group][key] = value
        else:
            evil["config"][group] = value
        torch.save({**ckpt, "ditlab": evil}, tmp_path / f"{name}.ckpt")

    def sample(name, *extra):
        overrides = [f"ckpt={tmp_path / name}.ckpt", f"out={tmp_path / 'out'}", "num_samples=2", "batch_size=2"]
        return sample_tool.sample(compose("sample", [*overrides, *extra]))

    with pytest.raises(
        DitlabError, match=r"names the Python module 'evil_plugin' \(block.module\).*plugins=\[evil_plugin\]"
    ):
        sample("module")
    with pytest.raises(DitlabError, match=r"names the Python module 'evil_plugin'"):
        train(compose_train(f"ckpt_path={tmp_path / 'module.ckpt'}", output_dir=tmp_path / "resumed"))
    with pytest.raises(DitlabError, match=r"unresolved interpolation at run_name"):
        sample("env")
    assert not marker.exists()
    # Named on the command line, the module is the user's choice.
    sample("module", "plugins=[evil_plugin]")
    assert marker.exists()


@pytest.mark.parametrize(
    "content,message",
    [
        ({"images": "u8"}, r"has no arr_0 \(it holds images\)"),
        ({"arr_0": "u8", "arr_1": "short"}, r"arr_1 must hold one integer label per image \(4\)"),
        ({"arr_0": "float", "arr_1": "labels"}, r"arr_0 must hold uint8 images \(N, H, W, 1\), got float32"),
        ("text", "is not a readable .npz archive"),
    ],
)
def test_classify_refuses_bad_sample_files_in_one_line(tmp_path, capsys, content, message):
    import numpy as np

    from ditlab.metrics.digits_classifier import main

    path = tmp_path / "samples.npz"
    arrays = {
        "u8": np.zeros((4, 8, 8, 1), np.uint8),
        "float": np.zeros((4, 8, 8, 1), np.float32),
        "labels": np.arange(4),
        "short": np.arange(3),
    }
    if content == "text":
        path.write_text("not an archive")
    else:
        np.savez(path, **{k: arrays[v] for k, v in content.items()})
    with pytest.raises(SystemExit) as info:
        main([f"samples={path}", f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_sample_archives_are_byte_identical_across_reruns(small_run, tmp_path):
    from ditlab.cli import compose
    from ditlab.tools import sample as sample_tool

    for out in ("a", "b"):
        sample_tool.sample(
            compose("sample", [f"ckpt={small_run}", f"out={tmp_path / out}", "num_samples=4", "batch_size=4"])
        )
        time.sleep(2.1)  # zip timestamps have 2 s resolution
    assert (tmp_path / "a" / "samples.npz").read_bytes() == (tmp_path / "b" / "samples.npz").read_bytes()
    assert (small_run / "samples.npz").read_bytes()[:4] == b"PK\x03\x04"


# ----------------------------------------------------------------------------- two processes (DDP on CPU)
RECORDING_OBJECTIVE = '''
import json, os
import torch
from ditlab.objectives.base import OBJECTIVES
from ditlab.objectives.ddpm import DDPMObjective

@OBJECTIVES.register("recording_ddpm")
class RecordingDDPM(DDPMObjective):
    """DDPM that appends the timesteps and noise each process draws to DRAWS_DIR/rank<r>.jsonl."""
    name = "recording_ddpm"

    def loss_at(self, model_fn, x0, t, noise, model_kwargs):
        if torch.is_grad_enabled():
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            with open(os.path.join(os.environ["DRAWS_DIR"], f"rank{rank}.jsonl"), "a") as f:
                f.write(json.dumps({"t": t.tolist(), "noise": float(noise.double().sum())}) + "\\n")
        return super().loss_at(model_fn, x0, t, noise, model_kwargs)
'''
DDP = [
    *EXACT,
    "trainer=ddp_cpu",
    "trainer.max_steps=9",
    "objective.name=recording_ddpm",
    "+objective.module=recording_objective",
]


def ddp_run(tmp_path: Path, name: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    (tmp_path / "recording_objective.py").write_text(RECORDING_OBJECTIVE)
    draws = tmp_path / f"{name}_draws"
    draws.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DRAWS_DIR": str(draws),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / name
    script = tmp_path / f"{name}_run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import compose_train
        from ditlab.training.module import DiffusionModule
        from ditlab.training.train import train
        step = DiffusionModule.optimizer_step
        def slow_step(self, *a, **k):
            step(self, *a, **k)
            time.sleep(0.3 if self.global_step >= 3 else 0)
        DiffusionModule.optimizer_step = slow_step
        train(compose_train(*{[*DDP, *extra]!r}, output_dir={str(out)!r}))
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return proc, out


def read_draws(folder: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture
def reap():
    """Kill (SIGKILL, whole process group) every DDP launch a test leaves behind, e.g. after a failed assert."""
    procs = []
    yield procs.append
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# three 2-process launches: 43-49 s on 2 quiet cores (measured 3 times), in the default suite because
# bitwise per-rank resume is what users trust this framework with
def test_two_processes_draw_their_own_noise_and_a_preempted_ddp_run_continues_bitwise(tmp_path, reap):
    proc, full = ddp_run(tmp_path, "full")
    reap(proc)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    draws = [read_draws(tmp_path / "full_draws", r) for r in (0, 1)]
    assert len(draws[0]) == len(draws[1]) == 9
    for a, b in zip(*draws):  # same step, different processes: different timesteps and noise
        assert a["t"] != b["t"] and a["noise"] != b["noise"]

    proc, run = ddp_run(tmp_path, "preempted")
    reap(proc)
    wait_for(run / "checkpoints" / "step0000004.ckpt", proc, timeout=600)
    os.kill(proc.pid, signal.SIGTERM)  # rank 0, as a scheduler would; Lightning stops rank 1 at the same step
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, proc.stderr.read()[-3000:]
    stopped = json.loads((run / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and 4 <= stopped["steps"] < 9
    proc, _ = ddp_run(tmp_path, "preempted", "ckpt_path=last")
    reap(proc)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    assert_same_run(final_state(run), final_state(full), from_step=stopped["steps"])
    resumed = read_draws(tmp_path / "preempted_draws", 1)
    assert resumed[-(9 - stopped["steps"]) :] == draws[1][stopped["steps"] :]  # rank 1 redrew exactly its own draws
