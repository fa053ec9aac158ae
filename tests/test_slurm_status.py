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
