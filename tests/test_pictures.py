"""What the pictures say: labelled sample-grid rows and titled evaluation grids, curves.png's axes
(y labels, a single evaluation drawn as a level line), losses logged at the step count evaluations use,
report titles naming the experiment and exponents that stay readable near zero."""

import csv

import numpy as np
import pytest

from ditlab.report.labels import experiment_name, power_term
from ditlab.samplers.grid import label_grid


def _digits_like(n_per_label: int, labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.array(labels), n_per_label)
    return np.full((len(y), 8, 8, 1), 255, np.uint8), y  # white tiles: only the text is dark


def test_grid_rows_carry_their_label_and_a_title_goes_above():
    images, labels = _digits_like(3, [3, 8])
    plain = label_grid(images, labels, columns=3, upscale=4)
    titled = label_grid(images, labels, columns=3, upscale=4, title="step 20")
    tiles_width = 3 * (32 + 2) + 2
    assert plain.shape[2] > tiles_width  # a margin left of the tiles
    margin = plain[:, :, : plain.shape[2] - tiles_width]
    row_pitch = 34
    for row in range(2):  # dark text in the margin beside each of the two rows
        band = margin[:, 2 + row * row_pitch : 2 + (row + 1) * row_pitch - 2]
        assert (band < 0.5).any(), f"row {row} has no label"
    assert titled.shape[1] > plain.shape[1] and (titled[:, : titled.shape[1] - plain.shape[1]] < 0.5).any()


def test_curves_have_y_labels_and_a_single_evaluation_is_a_level_line(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from ditlab.training.curves import write_curves

    (tmp_path / "eval").mkdir()
    (tmp_path / "metrics.csv").write_text("step,train/loss\n100,1.0\n200,0.8\n300,0.5\n")
    (tmp_path / "eval" / "metrics.jsonl").write_text('{"step": 300, "fd_digits": 12.5, "final": true}\n')
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at its axes
    assert write_curves(tmp_path, images_per_step=256) == ["train/loss", "eval/fd_digits"]
    loss_ax, eval_ax = figures[0].axes[:2]
    assert [loss_ax.get_ylabel(), eval_ax.get_ylabel()] == ["loss", "fd_digits"]
    assert len(eval_ax.lines) == 2  # the point and a level line across the run, not a lone dot
    assert eval_ax.get_xlim() == loss_ax.get_xlim()


def test_losses_are_logged_at_the_step_count_evaluations_use(train_cfg, tmp_path):
    from ditlab.training.train import train

    train(train_cfg("trainer.log_every_n_steps=2"))
    with open(tmp_path / "run" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert steps == [2, 4]  # after 2 and 4 optimizer steps, as eval rows and step checkpoints are named


def test_flat_and_small_exponents_print_readably():
    assert power_term(3.0, -0.0001) == "3 (flat: |b| < 0.0005)"
    assert power_term(3.0, -0.004) == "3 · x^-0.0040"
    assert power_term(3.0, -0.324, "C") == "3 · C^-0.324"


class _Run:
    def __init__(self, path):
        self.path = path


def _runs(root, overrides: list[str]):
    runs = []
    for i, line in enumerate(overrides):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / "overrides.txt").write_text(line + "\n")
        runs.append(_Run(root / str(i)))
    return runs


def test_report_titles_name_the_experiment_not_the_launch_time(tmp_path):
    sweep = tmp_path / "cpu_scaling" / "2026-12-05_14-00-00"
    runs = _runs(sweep, ["experiment=cpu_scaling model=tiny", "experiment=cpu_scaling model=small"])
    assert experiment_name(sweep, runs) == "cpu_scaling"
    plain = tmp_path / "multirun" / "2026-12-05_15-00-00"
    runs = _runs(plain, ["model=tiny model.patch_size=2 seed=1", "model=small model.patch_size=4 seed=1"])
    assert experiment_name(plain, runs) == "model x model.patch_size"
    alone = tmp_path / "multirun" / "2026-12-05_16-00-00"
    assert experiment_name(alone, _runs(alone, [""])) == "multirun/2026-12-05_16-00-00"
