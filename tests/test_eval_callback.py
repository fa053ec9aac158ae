"""The evaluation callback: periodic and final metrics from the EMA weights with their recipe and a
grid, untouched training RNG, and 2-process CPU DDP (every rank samples, no hang, same numbers as
one process evaluating the same weights)."""

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FAST, run_cli
from omegaconf import OmegaConf
from PIL import Image

from ditlab.build import build_data, build_model, build_objective, build_sampler
from ditlab.encoders.base import IdentityEncoder
from ditlab.training.eval_callback import EvalCallback, chunk_seed, interleaved_class_labels
from ditlab.training.train import train

# The digits classifier is trained once per cache folder (about a minute); share the project's cache.
SHARED_CACHE = os.environ.get("DITLAB_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "ditlab"))
EVAL = [
    "eval.metrics=[fd_digits,kd_digits,digits_accuracy]",
    "eval.num_samples=50",
    "eval.batch_size=20",
    "eval.kid_subset_size=20",
    "eval.kid_subsets=5",
    f"paths.cache_dir={SHARED_CACHE}",
]


def losses(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [r["train/loss"] for r in csv.DictReader(f) if r.get("train/loss")]


def test_eval_every_n_steps_logs_values_recipe_and_grid_and_the_summary_gets_the_final_values(train_cfg, tmp_path):
    summary = train(
        train_cfg(
            *EVAL,
            "sampler=ddpm",
            "eval.every_n_steps=2",
            "checkpoint.every_n_steps=1",
            "checkpoint.monitor=eval/fd_digits",
            "checkpoint.monitor_keep=1",
        )
    )
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["final"]) for r in rows] == [(2, False), (4, True)]
    for row in rows:
        assert row["images_seen"] == row["step"] * 16 and row["samples_per_process"] == [50]
        assert 0 < row["fd_digits"] and 0 <= row["digits_accuracy"] <= 1
        recipe = row["recipe"]
        assert recipe["weights"] == "ema" and recipe["num_samples"] == 50 and recipe["sampler"] == "ddpm"
        assert recipe["nfe"] == 8 and recipe["cfg_scale"] == 4.0 and recipe["cfg_channels"] == "all"
        assert recipe["encoder"] == {"name": "identity"} and recipe["precision"] == "fp32"
        assert recipe["reference"]["digits"]["count"] == 1797
        assert Image.open(run / "eval" / f"grid_step{row['step']:07d}.png").size[1] > 0
    assert summary["metrics"] == {
        k: rows[-1][k] for k in ("fd_digits", "kd_digits", "kd_digits_std", "digits_accuracy")
    }
    assert summary["metrics_recipe"] == rows[-1]["recipe"] and summary["metrics_step"] == 4
    assert summary["metrics_lower_is_better"] == {"fd_digits": True, "kd_digits": True, "digits_accuracy": False}
    with open(run / "metrics.csv") as f:  # the logger got the values too
        logged = [r for r in csv.DictReader(f) if r.get("eval/fd_digits")]
    assert [int(r["step"]) for r in logged] == [2, 4]
    # Lightning-native: the monitored checkpoint saw each value at its own step and kept the best.
    best_row = min(rows, key=lambda r: r["fd_digits"])
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert best.name.startswith(f"best-step{best_row['step']:07d}-fd_digits")
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    stored = next(v for v in ckpt["callbacks"].values() if v.get("monitor") == "eval/fd_digits")
    assert float(stored["best_model_score"]) == pytest.approx(best_row["fd_digits"], rel=1e-6)
    assert ckpt["global_step"] == best_row["step"]
    assert {p.name for p in (run / "checkpoints").glob("step*.ckpt")} == {f"step{i:07d}.ckpt" for i in (1, 2, 3, 4)}
    # The final samples are the final evaluation's images (sampled once), with that exact recipe.
    with np.load(run / "samples.npz") as f:
        assert f["arr_0"].shape == (50, 8, 8, 1) and f["arr_1"].tolist() == interleaved_class_labels(10, 50).tolist()
    assert summary["sampling"] == rows[-1]["recipe"] and summary["sample_seconds"] == 0.0


def test_evaluation_leaves_the_training_run_unchanged(train_cfg, tmp_path):
    train(train_cfg(run="plain"))
    train(train_cfg(*EVAL, "eval.every_n_steps=1", run="evaluated"))
    assert losses(tmp_path / "plain") == losses(tmp_path / "evaluated")


def test_the_evaluated_set_is_fixed_and_balanced():
    labels = interleaved_class_labels(10, 25)
    assert torch.bincount(labels).tolist() == [3] * 5 + [2] * 5
    assert torch.bincount(torch.split(labels, 10)[0]).tolist() == [1] * 10  # every chunk is balanced
    assert chunk_seed(7, 0) == chunk_seed(7, 0) != chunk_seed(7, 1) != chunk_seed(8, 1)


def test_bad_eval_settings_fail_with_one_line(train_cfg):
    from ditlab.errors import DitlabError

    with pytest.raises(DitlabError, match="eval.kid_subset_size"):
        train(train_cfg(*EVAL, "eval.kid_subset_size=60"))
    with pytest.raises(DitlabError, match="eval.metrics"):
        train(train_cfg("eval.metrics=[fid_digits]"))
    with pytest.raises(DitlabError, match="checkpoint.monitor=eval/fd_digits needs an evaluation every few steps"):
        train(train_cfg(*EVAL, "checkpoint.monitor=eval/fd_digits"))  # eval.every_n_steps=0: only at the end


def test_two_process_ddp_evaluation_matches_one_process_on_the_same_weights(tmp_path):
    res = run_cli(
        "ditlab-train",
        *FAST,
        *EVAL,
        "trainer=ddp_cpu",
        "run_name=ddp",
        "data.batch_size=32",
        "eval.every_n_steps=2",
        cwd=tmp_path,
        env={"DITLAB_CACHE": SHARED_CACHE},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    rows = [json.loads(line) for line in (run / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    # Chunks of 20 dealt to 2 processes: 0 and 2 (20 + 10 samples) to rank 0, chunk 1 to rank 1.
    assert all(r["samples_per_process"] == [30, 20] for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["fd_digits"] == rows[-1]["fd_digits"]

    # One process, the same EMA weights and eval settings: the same set, hence the same numbers.
    cfg = OmegaConf.load(run / "config.yaml")
    data = build_data(cfg.data)
    objective = build_objective(cfg.objective)
    ema = build_model(
        cfg.model, cfg.block, in_channels=1, input_size=8, out_channels=objective.out_channels(1), num_classes=10
    )
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    ema.load_state_dict({k[len("ema.") :]: v for k, v in state.items() if k.startswith("ema.")})
    callback = EvalCallback(
        cfg.eval,
        data=data,
        sampler=build_sampler(cfg.sampler),
        objective=objective,
        run_dir=tmp_path / "single",
        cache_dir=SHARED_CACHE,
    )
    trainer = SimpleNamespace(
        global_step=4,
        global_rank=0,
        world_size=1,
        loggers=[],
        precision="32-true",
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    module = SimpleNamespace(ema=ema.eval(), encoder=IdentityEncoder(), device=torch.device("cpu"), images_per_step=32)
    callback.setup(trainer, module, "fit")
    single = callback.evaluate(trainer, module, final=True)
    # Features are put back in sample order after the gather, so even KID's seeded subsets agree.
    for key in ("fd_digits", "kd_digits", "digits_accuracy"):
        assert single[key] == pytest.approx(rows[-1][key], rel=1e-4, abs=1e-6), key


def test_a_finished_checkpoint_is_evaluated_again_at_another_guidance_scale(train_cfg, tmp_path):
    """The cfg_scale recipe: resume a finished run's checkpoint into a new run directory with zero
    steps left; Lightning skips training and the final evaluation runs with the new scale."""
    base = train(train_cfg(*EVAL, run="base"))
    again = train(
        train_cfg(
            *EVAL, f"ckpt_path={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}", "eval.guidance_scale=1.0", run="cfg1"
        )
    )
    assert again["steps"] == base["steps"] == 4
    assert base["metrics_recipe"]["cfg_scale"] == 4.0 and again["metrics_recipe"]["cfg_scale"] == 1.0
    assert again["metrics_recipe"]["nfe"] == base["metrics_recipe"]["nfe"] // 2  # no guidance: one call per step
    assert set(again["metrics"]) == {"fd_digits", "kd_digits", "kd_digits_std", "digits_accuracy"}
    assert json.loads((tmp_path / "base" / "summary.json").read_text()) == json.loads(json.dumps(base))


def early_stopping_run(train_cfg, *overrides: str, run: str):
    """Epochs of 3 steps, 12 steps at most, early stopping on eval/fd_digits (the real callbacks group)."""
    return train(
        train_cfg(
            *EVAL,
            "sampler=ddpm",
            "callbacks=[default,early_stopping]",
            "callbacks.early_stopping.monitor=eval/fd_digits",
            "callbacks.early_stopping.patience=1",
            "+trainer.limit_train_batches=3",
            "trainer.max_steps=12",
            "checkpoint.every_n_steps=2",
            *overrides,
            run=run,
        )
    )


def test_early_stopping_on_an_eval_metric_stops_at_the_evaluation_step(train_cfg, tmp_path):
    # min_delta=1e9: no evaluation after the first counts as an improvement, so with patience 1 the run
    # must stop at the second evaluation (step 4, mid-epoch), not at an epoch end and not at max_steps.
    summary = early_stopping_run(
        train_cfg, "eval.every_n_steps=2", "callbacks.early_stopping.min_delta=1e9", run="stop"
    )
    run = tmp_path / "stop"
    rows = [json.loads(line) for line in (run / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["final"]) for r in rows] == [(2, False), (4, True)]  # the last evaluation is the final one
    assert summary["steps"] == 4 < 12 and summary["images_seen"] == 4 * 16
    assert summary["metrics_step"] == 4 and summary["metrics"]["fd_digits"] == rows[-1]["fd_digits"]
    assert {p.name for p in (run / "checkpoints").glob("step*.ckpt")} == {"step0000002.ckpt", "step0000004.ckpt"}
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4
    (state,) = (v for k, v in last["callbacks"].items() if k.startswith("EarlyStopping"))
    assert state["wait_count"] == 1 and float(state["best_score"]) == pytest.approx(rows[0]["fd_digits"])
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_early_stopping_on_an_eval_metric_waits_for_evaluations_and_counts_only_them(train_cfg, tmp_path):
    # Evaluations every 4 steps, epochs of 3. min_delta=1e9: no evaluation after the first counts as an
    # improvement, whatever the training does. With patience 3 the evaluations at 8 and 12 leave the run
    # two checks short of stopping, so it runs to max_steps. Checks at epoch ends would break this: at
    # step 3 no value exists yet (Lightning's own EarlyStopping stops the run with "eval/fd_digits ...
    # not available"), and at steps 6 and 9 a re-read of the last value would be two more checks
    # without improvement, stopping the run at step 9.
    summary = early_stopping_run(
        train_cfg,
        "eval.every_n_steps=4",
        "callbacks.early_stopping.min_delta=1e9",
        "callbacks.early_stopping.patience=3",
        run="waits",
    )
    run = tmp_path / "waits"
    rows = [json.loads(line) for line in (run / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = (v for k, v in last["callbacks"].items() if k.startswith("EarlyStopping"))
    assert state["wait_count"] == 2 and float(state["best_score"]) == pytest.approx(rows[0]["fd_digits"])
    assert summary["steps"] == 12 and summary["metrics_step"] == 12
