"""submitit on a Slurm cluster without accounting: job states from squeue, one sacct warning per sweep."""

from __future__ import annotations

import logging

from submitit.slurm.slurm import SlurmInfoWatcher

from ditlab.sweep import slurm_status


def test_squeue_lines_read_as_sacct_states_and_vanished_jobs_end():
    lines = ["7_0|COMPLETED|n1", "7_[2-3]|PENDING|", "8|RUNNING|n2", "junk"]
    text = "\n".join(slurm_status.squeue_as_sacct(["7_0", "7_1", "8", "9"], lines))
    info = SlurmInfoWatcher().read_info(text)  # submitit's own parser of sacct --parsable2
    assert info["7_0"]["State"] == "COMPLETED" and info["8"]["State"] == "RUNNING"
    assert info["7_3"]["State"] == "PENDING"  # array ranges expand as sacct's do
    assert "7_1" not in info  # its array is still listed: no verdict, submitit keeps polling
    assert info["9"]["State"] == slurm_status.GONE
    watcher = SlurmInfoWatcher()
    watcher._info_dict.update(info)
    assert watcher.is_done("9", mode="cache") and not watcher.is_done("8", mode="cache")


def test_sacct_warning_is_logged_once(caplog):
    logger = logging.getLogger("submitit")
    once = slurm_status.OnceFilter()
    logger.addFilter(once)
    try:
        with caplog.at_level(logging.WARNING, logger="submitit"):
            for call in range(3):
                logger.warning(f"Call #{call} - Bypassing sacct error boom, status may be inaccurate.")
            logger.warning("another warning")
    finally:
        logger.removeFilter(once)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "logged once" in messages[0] and messages[1] == "another warning"


def test_install_polls_squeue_when_sacct_fails(monkeypatch):
    monkeypatch.setattr(slurm_status, "sacct_works", lambda: False)
    monkeypatch.setattr(slurm_status, "_installed", False)
    monkeypatch.setattr(SlurmInfoWatcher, "_make_command", SlurmInfoWatcher._make_command)
    slurm_status.install()
    watcher = SlurmInfoWatcher()
    assert watcher._make_command() is None  # nothing registered: no poll
    watcher.register_job("5_1")
    command = watcher._make_command()
    assert command[1:] == ["-m", "ditlab.sweep.slurm_status", "5_1"]


GLOO_RESET = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:52142: "
    "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application. "
    "Check the logs of the remote worker before reporting an error. GLHF!"
)


def test_a_lost_ddp_peer_is_one_line_naming_both_ranks_and_the_resume_command(monkeypatch, tmp_path):
    from ditlab.training import peer_failure

    monkeypatch.setenv("SLURMD_NODENAME", "n1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    monkeypatch.setattr(peer_failure, "node_names", lambda: ["n1", "n2"])
    error = peer_failure.lost_peer_error(
        RuntimeError(GLOO_RESET), rank=0, world_size=2, run_dir=tmp_path, overrides=["seed=1", "ckpt_path=auto"]
    )
    message = str(error)
    assert isinstance(error, peer_failure.PeerLost) and "\n" not in message
    assert "rank 0 on n1 lost rank 1 on n2" in message and "Connection reset by peer" in message
    assert message.endswith("ditlab-train seed=1 ckpt_path=last") and "GLHF" not in message
    other = RuntimeError("CUDA out of memory")
    assert peer_failure.lost_peer_error(other, rank=0, world_size=2, run_dir=tmp_path, overrides=[]) is None


def test_a_finished_run_is_skipped_by_ckpt_path_auto_unless_more_steps_are_asked(tmp_path, monkeypatch):
    import json

    from conftest import compose_train

    from ditlab.sweep.jobs import finished_run

    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished", "steps": 4}))
    assert finished_run(compose_train("ckpt_path=auto", output_dir=tmp_path))["steps"] == 4
    assert finished_run(compose_train("ckpt_path=auto", "trainer.max_steps=8", output_dir=tmp_path)) is None
    assert finished_run(compose_train(output_dir=tmp_path)) is None  # no ckpt_path=auto: the usual refusal
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued SLURM job continues (or skips) by itself
    assert finished_run(compose_train(output_dir=tmp_path)) is not None
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted", "steps": 2}))
    assert finished_run(compose_train("ckpt_path=auto", output_dir=tmp_path)) is None
