"""A launch on a run directory is a transaction (docs/runs.md): a kill at any point of a checkpoint
write resumes bitwise from the newest complete checkpoint, the lock dies with its process, and a
refused launch (or a failed write) leaves the folder as it was."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_train
from test_runs import assert_same_run, final_state

from ditlab.checkpoints import checkpoint_io
from ditlab.checkpoints.run_lock import LOCK_FILE, RunLock
from ditlab.errors import DitlabError
from ditlab.training.train import train

TESTS = Path(__file__).resolve().parent
SHORT = ["trainer.max_steps=5", "checkpoint.every_n_steps=1"]  # a checkpoint (step file, then last.ckpt) per step


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run that every killed-and-resumed one must reproduce bitwise."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(compose_train(*SHORT, output_dir=out))
    return out


def killed_run(out: Path, step: int, file: str, partial: bool) -> None:
    """Run in a subprocess that SIGKILLs itself when it is about to write ``file`` at ``step``, after
    leaving that file's temporary half-written (``partial``) or before starting it."""
    script = out.parent / f"{out.name}_killed.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        import torch
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import compose_train
        from ditlab.checkpoints import checkpoint_io
        from ditlab.training.train import train
        save = checkpoint_io.AtomicCheckpointIO.save_checkpoint
        def save_or_die(self, checkpoint, path, storage_options=None):
            path = Path(path)
            if checkpoint["global_step"] == {step} and path.name == {file!r}:
                if {partial!r}:
                    tmp = path.with_name(path.name + ".tmp-" + str(os.getpid()))
                    torch.save(checkpoint, tmp)
                    os.truncate(tmp, tmp.stat().st_size // 2)  # a write cut off halfway
                os.kill(os.getpid(), signal.SIGKILL)
            save(self, checkpoint, path, storage_options)
        checkpoint_io.AtomicCheckpointIO.save_checkpoint = save_or_die
        train(compose_train(*{SHORT!r}, output_dir={str(out)!r}))
    """)
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


# (step, file being written when killed, half-written temporary left, the checkpoint the rerun must use)
KILL_POINTS = {
    "before_the_step_file": (3, "step0000003.ckpt", True, "last.ckpt"),
    "between_the_step_file_and_last": (3, "last.ckpt", False, "step0000003.ckpt"),
    "during_last": (3, "last.ckpt", True, "step0000003.ckpt"),
    "during_the_first_last": (1, "last.ckpt", True, "step0000001.ckpt"),  # no last.ckpt at all (issue 23)
}
FAST_POINT = "during_last"  # the others run in `make test-full` (a subprocess each: ~20 s on 2 cores)


@pytest.mark.parametrize(
    "point", [p if p == FAST_POINT else pytest.param(p, marks=pytest.mark.slow) for p in KILL_POINTS]
)
def test_a_kill_during_a_checkpoint_write_resumes_bitwise_from_the_newest_complete_checkpoint(
    reference, tmp_path, point, caplog
):
    step, file, partial, expected = KILL_POINTS[point]
    run = tmp_path / "run"
    killed_run(run, step, file, partial)
    assert bool(list(run.glob("checkpoints/*.tmp-*"))) == partial
    # A fresh launch is refused, naming the checkpoint a resume uses and the command.
    with pytest.raises(
        DitlabError, match=rf"unfinished run; its newest complete checkpoint is .*{expected}.*ckpt_path=last"
    ):
        train(compose_train(*SHORT, output_dir=run))
    assert not list(run.glob("checkpoints/*.tmp-*"))  # cleaned by the refused launch too
    summary = train(compose_train(*SHORT, "ckpt_path=last", output_dir=run))  # no takeover_lock: the kernel freed it
    assert summary["status"] == "finished" and summary["resumed_from"].endswith(expected)
    resumed_at = torch.load(run / "checkpoints" / expected, weights_only=True)["global_step"]
    # The killed attempt's log rows never reached the disk: compare the losses the rerun logged.
    assert_same_run(final_state(run), final_state(reference), from_step=resumed_at + 1)
    assert not [
        p.name for p in run.rglob("*") if "-v" in p.name or ".tmp-" in p.name
    ]  # no step…-v1.ckpt, no temporaries


def test_a_damaged_checkpoint_is_skipped_with_one_line(reference, tmp_path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("step0000002.ckpt", "step0000003.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes((reference / "checkpoints" / name).read_bytes())
    (run / "config.yaml").write_text((reference / "config.yaml").read_text())
    last = run / "checkpoints" / "last.ckpt"  # holds step 5; a damaged copy, as a non-atomic writer leaves it
    last.write_bytes(last.read_bytes()[:5000])
    (run / "checkpoints" / "step0000003.ckpt").write_bytes(b"not a checkpoint")
    summary = train(compose_train(*SHORT, "ckpt_path=auto", output_dir=run))
    assert summary["resumed_from"].endswith("step0000002.ckpt")
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 2 and "last.ckpt" in skipped[0] and "step0000003.ckpt" in skipped[1]
    assert_same_run(final_state(run), final_state(reference), from_step=3)


# ----------------------------------------------------------------------------- the lock
def hold_lock(run: Path) -> subprocess.Popen:
    code = f"from ditlab.checkpoints.run_lock import RunLock; RunLock({str(run)!r}).acquire(); print('held', flush=True); input()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_dies_with_its_process_and_a_live_holder_is_refused(train_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    train(train_cfg())
    holder = hold_lock(run)
    try:
        for extra in ((), ("overwrite=true",), ("ckpt_path=last", "trainer.max_steps=6", "takeover_lock=true")):
            before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
            with pytest.raises(DitlabError, match=f"in use by a live run: pid {holder.pid}"):
                train(train_cfg(*extra))
            assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # not even cli.log
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, the kernel's lock does not
        holder.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    assert train(train_cfg("ckpt_path=last", "trainer.max_steps=6"))["steps"] == 6
    assert any(
        f"pid {holder.pid}" in r.getMessage() and "ended without releasing" in r.getMessage() for r in caplog.records
    )
    assert not (run / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_taken_only_on_request(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "started": "then"}))
    with pytest.raises(DitlabError, match="node-elsewhere.*cannot be checked from this host.*takeover_lock=true"):
        RunLock(tmp_path).acquire()
    with RunLock(tmp_path, takeover=True):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- a refused launch leaves nothing
@pytest.mark.parametrize("override", ["trainer.precision=bogus", "trainer.devices=0", "trainer.max_steps=0"])
def test_a_launch_refused_late_or_early_leaves_no_folder(train_cfg, tmp_path, override):
    with pytest.raises(Exception):  # noqa: B017 - the message is tested where the option is validated
        train(train_cfg(override))
    assert not (tmp_path / "run").exists()


def test_a_refused_overwrite_puts_the_earlier_run_back(train_cfg, tmp_path):
    run = tmp_path / "run"
    train(train_cfg())
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    (run / "checkpoints" / "step0000003.ckpt.tmp-999999").write_bytes(b"half")  # from a killed writer
    with pytest.raises(Exception):  # noqa: B017
        train(train_cfg("overwrite=true", "trainer.precision=bogus"))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # temporary gone, the rest intact
    with pytest.raises(DitlabError, match=r"finished run.*ckpt_path=last trainer.max_steps=<more>.*overwrite=true"):
        train(train_cfg())
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_rerun_refused_against_a_finished_run_appends_nothing_to_its_log(train_cfg, tmp_path):
    run = tmp_path / "run"
    train(train_cfg())
    (run / "cli.log").write_text("the first run's log\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refused = cli("ditlab-train", tmp_path, f"hydra.run.dir={run}")
    assert refused.returncode == 2 and "already holds a finished run" in refused.stderr, refused.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_sweep_jobs_failure_record_does_not_block_the_corrected_command(train_cfg, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "trainer.precision=bogus"}))
    assert train(train_cfg())["status"] == "finished"


def test_a_resume_from_an_earlier_step_replaces_its_step_files(train_cfg, tmp_path):
    run = tmp_path / "run"
    train(train_cfg("checkpoint.every_n_steps=1"))
    train(train_cfg("checkpoint.every_n_steps=1", f"ckpt_path={run}/checkpoints/step0000002.ckpt"))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.ckpt", *(f"step000000{s}.ckpt" for s in (1, 2, 3, 4))]


# ----------------------------------------------------------------------------- the machine
def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_good_checkpoint(
    train_cfg, tmp_path, monkeypatch
):
    save = torch.save

    def fills_the_disk(obj, f, *args, **kwargs):
        if obj.get("global_step") == 4:
            Path(f).write_bytes(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", fills_the_disk)
    with pytest.raises(
        DitlabError, match=r"writing checkpoint .*step0000004.ckpt failed \(No space left on device;.*ckpt_path=last"
    ) as info:
        train(train_cfg())
    assert "\n" not in str(info.value)
    run = tmp_path / "run"
    assert not list(run.rglob("*.tmp-*"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_a_read_only_run_folder_is_one_line_before_any_work(train_cfg, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(train_cfg())
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # tests run as root, where chmod does not stop writes
        if str(path).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    started = time.time()
    with pytest.raises(DitlabError, match=r"cannot write to the run folder .*run \(Read-only file system\)"):
        train(train_cfg("ckpt_path=last", "trainer.max_steps=6"))
    assert time.time() - started < 5
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


# ----------------------------------------------------------------------------- through the command line
def cli(tool: str, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / tool
    return subprocess.run([str(exe), *overrides], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_refused_commands_write_no_log(tmp_path):
    refused = cli("ditlab-train", tmp_path, "paths.runs_dir=runs", "run_name=r", "trainer.max_steps=0")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert not list((tmp_path / "runs").rglob("*"))  # Hydra made runs/ for the run folder; nothing is inside
    foreign = tmp_path / "someone_elses"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    refused = cli("ditlab-extract", tmp_path, f"cache_dir={foreign}", "data=digits")
    assert refused.returncode == 2 and "cannot be extracted" in refused.stderr, refused.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty_cache"  # a folder the user made: kept, even empty
    empty.mkdir()
    refused = cli("ditlab-extract", tmp_path, f"cache_dir={empty}", "data=digits")
    assert refused.returncode == 2 and "cannot be extracted" in refused.stderr, refused.stderr
    assert empty.is_dir() and not list(empty.iterdir())
    refused = cli("ditlab-extract", tmp_path, f"cache_dir={tmp_path / 'new_cache'}", "data=digits")
    assert refused.returncode == 2 and not (tmp_path / "new_cache").exists()  # made by Hydra: removed
