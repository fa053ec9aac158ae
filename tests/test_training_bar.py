"""The training bar counts steps out of trainer.max_steps (from the resumed step after a resume), and
cosmetic switches (progress=false, TQDM_DISABLE=1) are neither refused on resume nor ignored."""

from __future__ import annotations

import json

import lightning as L
import pytest
from conftest import compose_train

from ditlab import progress
from ditlab.training.train import train


class BarProbe(L.Callback):
    """Records the training bar's count at the first step: (initial, total), or None without a bar."""

    def __init__(self):
        self.seen = "no step"

    def on_train_batch_end(self, trainer, *args):
        if self.seen == "no step":
            bar = trainer.progress_bar_callback
            self.seen = None if bar is None else (bar.train_progress_bar.initial, bar.train_progress_bar.total)


def test_the_bar_counts_run_steps_and_cosmetic_switches_do_not_block_a_resume(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def attempt(max_steps: int, *overrides: str) -> tuple[dict, object]:
        probe = BarProbe()
        cfg = compose_train(f"trainer.max_steps={max_steps}", *overrides, output_dir=run)
        return train(cfg, callbacks=[probe]), probe.seen

    bar_on = ("trainer.enable_progress_bar=true", "progress=true")
    _, seen = attempt(3, *bar_on)
    assert seen == (0, 3)  # steps out of max_steps, not batches out of the epoch's 112
    summary, seen = attempt(5, "ckpt_path=last", "progress=false")  # cosmetic: accepted, no bar
    assert summary["steps"] == 5 and seen is None
    _, seen = attempt(7, "ckpt_path=last", *bar_on)
    assert seen == (5, 7)  # the resumed run starts at its step; the rate counts this attempt only
    monkeypatch.setenv("TQDM_DISABLE", "1")
    summary, seen = attempt(8, "ckpt_path=last", *bar_on)
    assert summary["steps"] == 8 and seen is None  # tqdm's own switch turns the training bar off too
    changes = [json.loads(line)["changes"] for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert changes[0]["progress"] == [True, False] and changes[1]["progress"] == [False, True]


@pytest.mark.parametrize("interval_s", [progress.LOG_INTERVAL_S, 0.0])
def test_a_log_file_gets_the_final_line_once(train_cfg, capsys, monkeypatch, interval_s):
    # capsys's stdout is no terminal: each draw is a line. Lightning's epoch-end redraw followed by
    # close()'s wrote the last line twice; with interval 0 the last update writes it already.
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", interval_s)
    train(train_cfg("trainer.max_steps=2", "trainer.enable_progress_bar=true", "progress=true"))
    lines = capsys.readouterr().out.splitlines()
    final = [line for line in lines if "| 2/2 [" in line]
    assert len(final) == 1 and final[0] == [line for line in lines if "step/s" in line][-1], lines
