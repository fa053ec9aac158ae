"""eval/val_loss: the objective's loss on fixed images, times and noise (EMA weights, no sampling)."""

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from ditlab.build import build_data, build_model, build_objective
from ditlab.encoders.base import IdentityEncoder
from ditlab.errors import DitlabError
from ditlab.metrics.val_loss import ValidationLoss, stratified_times, val_loss_options
from ditlab.training.train import train

OBJECTIVES = {
    "ddpm": ["objective=ddpm"],
    "flow": ["objective=flow"],
    "flow_logit_normal": ["objective=flow", "objective.time_sampling=logit_normal"],
}
# The digits classifier is trained once per cache folder; share the project's cache (as test_eval_callback).
SHARED_CACHE = os.environ.get("DITLAB_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "ditlab"))
LOSS_ONLY = ["eval.metrics=[val_loss]", "eval.val_loss.num_images=32", "eval.val_loss.num_times=4"]


def parts(train_cfg, *overrides):
    cfg = train_cfg(*LOSS_ONLY, *overrides)
    data, objective = build_data(cfg.data), build_objective(cfg.objective)
    model = build_model(
        cfg.model,
        cfg.block,
        in_channels=1,
        input_size=data.resolution,
        out_channels=objective.out_channels(1),
        num_classes=data.num_classes,
    )
    torch.manual_seed(1)
    for p in model.parameters():  # no zero-initialised output: the loss must depend on the weights
        torch.nn.init.normal_(p, std=0.05)
    return ValidationLoss(val_loss_options(cfg.eval), data, objective), model.eval(), objective


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_same_weights_give_the_same_value_and_the_global_rng_is_untouched(train_cfg, name):
    val, model, _ = parts(train_cfg, *OBJECTIVES[name])
    state = torch.random.get_rng_state()
    first = val.compute(model, IdentityEncoder(), torch.device("cpu"))
    second = val.compute(model, IdentityEncoder(), torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first["val_loss"] == second["val_loss"] and first["val_loss_strata"] == second["val_loss_strata"]
    assert 0 < first["val_loss"] < 1e3 and len(first["val_loss_strata"]) == 4
    with torch.no_grad():  # other weights, another value
        next(model.parameters()).add_(0.1)
    assert val.compute(model, IdentityEncoder(), torch.device("cpu"))["val_loss"] != first["val_loss"]


@pytest.mark.parametrize("name", ["ddpm", "flow"])
def test_the_value_is_the_objectives_loss_at_those_times_and_that_noise(train_cfg, name):
    val, model, objective = parts(train_cfg, *OBJECTIVES[name])
    value = val.compute(model, IdentityEncoder(), torch.device("cpu"))["val_loss"]
    images, labels = val.data.real_images()
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:32].sort().values
    assert torch.equal(val.latents, images[pick])  # the seeded subset, encoded (identity)
    by_hand = []
    for k, t_k in enumerate(val.times):
        t = t_k.repeat(32)
        noise = val.noise(k)
        with torch.no_grad():
            by_hand.append(objective.loss_at(model, images[pick], t, noise, {"y": labels[pick]})["loss"].mean())
    assert value == pytest.approx(float(torch.stack(by_hand).double().mean()), rel=1e-6)
    if name == "ddpm":  # learned Σ: the full loss, MSE + VLB
        with torch.no_grad():
            terms = objective.loss_at(model, images[pick], val.times[0].repeat(32), val.noise(0), {"y": labels[pick]})
        assert float(terms["vb"].abs().sum()) > 0 and torch.allclose(terms["loss"], terms["mse"] + terms["vb"])


def test_times_are_the_midpoints_of_equal_probability_strata_of_the_training_draw(train_cfg):
    ddpm = build_objective(train_cfg("objective=ddpm").objective)
    assert stratified_times(ddpm, 8).tolist() == [62, 187, 312, 437, 562, 687, 812, 937]
    flow = build_objective(train_cfg("objective=flow").objective)
    assert stratified_times(flow, 4).tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875])
    for extra in (["objective.time_sampling=logit_normal"], ["objective.time_shift=3"]):
        shaped = build_objective(train_cfg("objective=flow", *extra).objective)
        times = stratified_times(shaped, 4).sort().values  # t = 1 − τ: τ's quantiles in reverse order
        torch.manual_seed(0)
        drawn = shaped.sample_t(200_000)
        below = [(drawn <= t).double().mean().item() for t in times]  # the draw's CDF at each time
        assert below == pytest.approx([0.125, 0.375, 0.625, 0.875], abs=0.005)


def test_training_logs_val_loss_alone_between_evaluations_and_leaves_training_unchanged(train_cfg, tmp_path):
    fast = ["trainer.max_steps=12", "ema.decay=0.5", "optim.lr=3e-3"]  # EMA close to the weights
    train(train_cfg(*fast, run="plain"))
    summary = train(
        train_cfg(*fast, *LOSS_ONLY, "eval.every_n_steps=6", "eval.val_loss.every_n_steps=2", run="evaluated")
    )

    def losses(run):
        with open(tmp_path / run / "metrics.csv") as f:
            return [r["train/loss"] for r in csv.DictReader(f) if r.get("train/loss")]

    assert losses("plain") == losses("evaluated")  # evaluation drew nothing from training's generators
    rows = [json.loads(x) for x in (tmp_path / "evaluated" / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12] and rows[-1]["final"]
    assert all("recipe" not in r and r["val_loss_recipe"]["weights"] == "ema" for r in rows)  # nothing sampled
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learns
    assert summary["metrics"] == {"val_loss": rows[-1]["val_loss"]}
    assert summary["metrics_lower_is_better"] == {"val_loss": True}


def test_bad_val_loss_settings_fail_with_one_line(train_cfg):
    with pytest.raises(DitlabError, match="eval.val_loss.num_times must be positive"):
        train(train_cfg(*LOSS_ONLY, "eval.val_loss.num_times=0"))
    with pytest.raises(DitlabError, match="eval.val_loss.every_n_steps"):
        train(train_cfg(*LOSS_ONLY, "eval.val_loss.every_n_steps=-1"))


def test_early_stopping_on_another_metric_ignores_the_val_loss_only_evaluations(train_cfg, tmp_path):
    # fd_digits every 4 steps, val_loss alone every step. min_delta=1e9: no fd_digits evaluation after the
    # first improves; patience 2 lets the run reach step 12 (checks at 8 and 12). Counting the val_loss-only
    # rows as checks of the stale eval/fd_digits would stop it at step 6.
    summary = train(
        train_cfg(
            "eval.metrics=[fd_digits,val_loss]",
            "eval.num_samples=20",
            "eval.batch_size=20",
            "eval.every_n_steps=4",
            "eval.val_loss.every_n_steps=1",
            "eval.val_loss.num_images=16",
            "eval.val_loss.num_times=2",
            f"paths.cache_dir={SHARED_CACHE}",
            "sampler=ddim",
            "callbacks=[default,early_stopping]",
            "callbacks.early_stopping.monitor=eval/fd_digits",
            "callbacks.early_stopping.patience=2",
            "callbacks.early_stopping.min_delta=1e9",
            "trainer.max_steps=12",
            run="stop",
        )
    )
    rows = [json.loads(x) for x in (tmp_path / "stop" / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "fd_digits" in r] == [4, 8, 12]
    assert [r["step"] for r in rows] == list(range(1, 13)) and summary["steps"] == 12
