"""Optimizer and learning-rate schedule groups (docs/configs.md, docs/extending.md): the schedules'
values, weight-decay groups, the scheduled rate a run really uses, bitwise resume mid-schedule, and
one-line refusals of bad options."""

import csv
import math

import pytest
import torch
from conftest import compose_train
from test_runs import assert_same_run, final_state

from ditlab.build import build_lr_schedule, build_optimizer
from ditlab.errors import DitlabError
from ditlab.optim import decay_groups
from ditlab.training.train import train

SCHEDULED = [
    "data.batch_size=64",
    "trainer.max_steps=10",
    "trainer.log_every_n_steps=1",
    "checkpoint.every_n_steps=1",
    "lr_schedule=warmup_cosine",
    "lr_schedule.warmup_steps=3",
    "optim.weight_decay=0.1",
    "final_samples.num_samples=10",
    "final_samples.batch_size=10",
]


def schedule(*overrides: str):
    return build_lr_schedule(compose_train(*overrides).lr_schedule)


def test_constant_is_no_scheduler_and_the_others_follow_their_formulas():
    assert schedule() is None  # DiT's constant rate: the optimizer alone, as before schedules existed
    warm = schedule("lr_schedule=warmup_constant", "lr_schedule.warmup_steps=4")
    assert [warm(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = schedule("lr_schedule=warmup_cosine", "lr_schedule.warmup_steps=2", "trainer.max_steps=12")
    assert cos.total_steps == 12  # follows the run's length
    assert [cos(0), cos(1), cos(2)] == [0.5, 1.0, 1.0]
    assert cos(7) == pytest.approx(0.5) and cos(12) == pytest.approx(0.0) and cos(50) == pytest.approx(0.0)
    isq = schedule("lr_schedule=inverse_sqrt", "lr_schedule.warmup_steps=0", "lr_schedule.decay_start=4")
    assert isq(2) == 1.0 and isq(15) == pytest.approx(0.5) and isq(35) == pytest.approx(1 / math.sqrt(9))


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr_schedule.warmup_steps=-1", "lr_schedule.warmup_steps must be >= 0"),
        ("lr_schedule.final_fraction=2", r"lr_schedule.final_fraction must lie in \[0, 1\]"),
        ("+lr_schedule.bogus=1", "bad options for learning-rate schedule 'warmup_cosine'"),
        ("lr_schedule.warmup_steps=4", r"lr_schedule.total_steps \(4\) must exceed lr_schedule.warmup_steps \(4\)"),
    ],
)
def test_bad_schedule_options_are_one_line(override, message):
    with pytest.raises(DitlabError, match=message):
        schedule("lr_schedule=warmup_cosine", "lr_schedule.warmup_steps=1", override)


def test_bad_optimizer_options_are_refused_before_any_work():
    with pytest.raises(DitlabError, match=r"bad options for optimizer 'adamw' \(optim\.\*\)"):
        build_optimizer(compose_train("+optim.momentum=0.9").optim)


def test_weight_decay_skips_biases_norm_gains_and_named_tensors():
    net = torch.nn.ModuleDict({"lin": torch.nn.Linear(3, 4), "norm": torch.nn.LayerNorm(4)})
    net["embedding_table"] = torch.nn.Embedding(5, 4)
    named = list(net.named_parameters())
    assert decay_groups(named, 0.0) == [{"params": [p for _, p in named], "weight_decay": 0.0}]
    decay, no_decay = decay_groups(named, 0.1, exclude=["embedding_table"])
    assert decay["weight_decay"] == 0.1 and [id(p) for p in decay["params"]] == [id(net["lin"].weight)]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4  # lin.bias, norm x2, table


def logged_lr(run) -> dict[int, float]:
    with open(run / "metrics.csv") as f:
        return {int(r["step"]): float(r["lr-AdamW/pg1"]) for r in csv.DictReader(f) if r.get("lr-AdamW/pg1")}


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scheduled") / "run"
    return out, train(compose_train(*SCHEDULED, output_dir=out))


def test_a_scheduled_run_steps_at_the_scheduled_rate_and_records_it(scheduled_run):
    run, summary = scheduled_run
    assert summary["optim"]["optim"]["weight_decay"] == 0.1
    assert summary["optim"]["lr_schedule"] == {
        "name": "warmup_cosine",
        "warmup_steps": 3,
        "total_steps": 10,
        "final_fraction": 0.0,
    }
    rule = schedule(*SCHEDULED)
    lrs = logged_lr(run)  # the LR monitor logs the rate of the step about to be taken
    assert len(lrs) >= 8
    for step, lr in lrs.items():
        assert lr == pytest.approx(2e-3 * rule(step), rel=1e-6), step
    sched = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["lr_schedulers"][0]
    assert sched["last_epoch"] == 10


def test_resume_mid_schedule_is_bitwise(scheduled_run, tmp_path):
    reference, _ = scheduled_run
    resumed = tmp_path / "resumed"
    train(compose_train(*SCHEDULED, f"ckpt_path={reference}/checkpoints/step0000004.ckpt", output_dir=resumed))
    assert_same_run(final_state(resumed), final_state(reference), from_step=4)
    assert logged_lr(resumed) == {s: v for s, v in logged_lr(reference).items() if s >= 4}
