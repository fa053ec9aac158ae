"""compute.*: every job of a sweep spends the same training compute (Gflops x 3 x images seen), and is
evaluated / checkpointed at the same compute values, to within half a step and without drift."""

import json
import sys
from pathlib import Path

import pytest
from test_eval_callback import EVAL

from ditlab.build import build_data, build_model
from ditlab.errors import DitlabError
from ditlab.models.accounting import describe_model
from ditlab.training.compute import compute_steps, plan_compute
from ditlab.training.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_experiments import compose_with_hydra, grid  # noqa: E402


def gflops_of(cfg) -> float:
    data = build_data(cfg.data)
    model = build_model(
        cfg.model, cfg.block, in_channels=1, input_size=data.resolution, out_channels=2, num_classes=data.num_classes
    )
    return describe_model(cfg.model, cfg.block, model)["gflops"]  # as train() records it in summary.json


def test_a_compute_matched_grid_spends_the_budget_in_every_job():
    budget = 5000.0  # Gflops: between tiny/8 (~1.1k steps) and small/2 (~290 steps) at batch 128
    base = compose_with_hydra("experiment=cpu_scaling")
    steps = {}
    for point in grid(base):
        cfg = compose_with_hydra(
            "experiment=cpu_scaling",
            *point,
            f"compute.budget_gflops={budget}",
            f"compute.eval_every_gflops={budget / 4}",
        )
        g, batch = gflops_of(cfg), int(cfg.data.batch_size)
        plan = plan_compute(cfg.compute, g, batch, int(cfg.trainer.max_steps))
        step = 3 * g * batch
        assert abs(plan.max_steps * step - budget) <= step / 2  # nearest whole step
        assert (
            abs((plan.max_steps + 1) * step - budget) >= step / 2
            and abs((plan.max_steps - 1) * step - budget) >= step / 2
        )
        assert len(plan.eval_steps) == 4 and plan.eval_steps[-1] == plan.max_steps
        for k, s in enumerate(plan.eval_steps, 1):  # each evaluation within half a step of k x interval
            assert abs(s * step - k * budget / 4) <= step / 2
        steps[" ".join(point)] = plan.max_steps
    assert (
        steps["model=small model.patch_size=2"]
        < steps["model=tiny model.patch_size=2"]
        < steps["model=tiny model.patch_size=8"]
    )


def test_rounding_does_not_accumulate():
    # 1 Gflop per step, interval 1.4: steps 1, 3, 4, 6, 7, 8, 10 (a fixed interval of 1 would end at 10 x 1.0)
    assert compute_steps(1.4, 1 / 3, 1, 10) == (1, 3, 4, 6, 7, 8, 10)
    assert compute_steps(2.0, 1 / 3, 1, 9) == (2, 4, 6, 8)


def test_bad_compute_settings_are_one_line_errors():
    with pytest.raises(DitlabError, match="less than half a training step"):
        plan_compute({"budget_gflops": 1.0}, 0.01, 128, 100)
    with pytest.raises(DitlabError, match="eval_every_gflops"):
        plan_compute({"eval_every_gflops": 0.0}, 0.01, 128, 100)
    assert plan_compute({"budget_gflops": None}, 0.01, 128, 100) is None


def test_training_stops_evaluates_and_checkpoints_at_the_compute_marks(train_cfg, tmp_path):
    g = gflops_of(train_cfg())
    step = 3 * g * 16  # FAST: global batch 16
    cfg = train_cfg(
        *EVAL,
        "eval.metrics=[digits_accuracy]",
        "trainer.max_steps=1000",
        "checkpoint.every_n_steps=1000",
        f"compute.budget_gflops={6.4 * step}",
        f"compute.eval_every_gflops={2.6 * step}",
        f"compute.checkpoint_every_gflops={1.7 * step}",
    )
    summary = train(cfg)
    assert summary["steps"] == 6 and summary["compute_plan"]["max_steps"] == 6
    assert abs(summary["train_compute_gflops"] - 6.4 * step) <= step / 2
    history = [json.loads(line) for line in (tmp_path / "run" / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [3, 5, 6]  # nearest 2.6 and 5.2 steps, then the final evaluation
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step*.ckpt"))
    assert ckpts == ["step0000002.ckpt", "step0000003.ckpt", "step0000005.ckpt"]  # nearest 1.7, 3.4, 5.1 steps
