"""End-to-end training on CPU with the real configs (shrunk): outputs, resume, determinism, EMA.
(Exact resume, locks, preemption and the divergence guard: test_runs.py.)"""

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ditlab.errors import DitlabError
from ditlab.objectives.base import OBJECTIVES
from ditlab.objectives.ddpm import DDPMObjective
from ditlab.provenance import NUMERIC_PACKAGES
from ditlab.training.ema import make_ema, update_ema
from ditlab.training.train import train


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def test_few_step_run_writes_every_output(train_cfg, tmp_path):
    cfg = train_cfg()
    summary = train(cfg)
    run = tmp_path / "run"
    # Checkpoint: model + EMA + optimizer + step + loader position, loadable with weights_only=True.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 4
    assert any(k.startswith("ema.") for k in ckpt["state_dict"]) and any(
        k.startswith("model.") for k in ckpt["state_dict"]
    )
    assert ckpt["optimizer_states"][0]["state"][0]["step"] == 4
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "yielded": 4}]
    assert ckpt["ditlab"]["config"]["model"]["hidden_size"] == 32
    assert (run / "checkpoints" / "step0000002.ckpt").is_file()  # periodic checkpoint
    # Samples: uint8 NHWC + class-balanced labels.
    with np.load(run / "samples.npz") as f:
        arr, labels = f["arr_0"], f["arr_1"]
    assert arr.dtype == np.uint8 and arr.shape == (20, 8, 8, 1)
    assert np.bincount(labels).tolist() == [2] * 10
    grid = Image.open(run / "samples_grid.png")
    assert grid.size[1] > grid.size[0]  # 10 rows (one per class) x 2 columns
    # Summary: what a user needs to compare runs.
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in (
        "params",
        "gflops",
        "tokens",
        "steps",
        "images_seen",
        "wall_seconds",
        "final_loss",
        "seed",
        "git_commit",
        "sampling",
    ):
        assert key in on_disk
    assert on_disk["steps"] == 4 and on_disk["images_seen"] == 4 * 16
    assert on_disk["gflops"] == pytest.approx(on_disk["gflops_closed_form"], rel=1e-6)
    assert cfg.guidance.scale > 1 and on_disk["sampling"]["cfg_scale"] == cfg.guidance.scale
    assert on_disk["sampling"]["nfe"] == 8  # 4 sampling steps x 2 (CFG)
    assert np.isfinite(on_disk["final_loss"])
    # The versions of the packages a run's numbers depend on, read from the installed distributions.
    assert on_disk["versions"]["numpy"] == np.__version__ and on_disk["versions"]["lightning"] == L.__version__
    assert on_disk["versions"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])  # +cu130 or not
    assert set(on_disk["versions"]) == set(NUMERIC_PACKAGES) and all(on_disk["versions"].values())
    # Per-step metrics and the resolved config.
    assert [int(r["step"]) for r in read_metrics(run)] == [1, 2, 3, 4]  # after 1, 2, 3, 4 optimizer steps
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.model.hidden_size == 32 and saved.seed == 0


def test_resume_continues_the_step_count(train_cfg, tmp_path):
    train(train_cfg())
    run = tmp_path / "run"
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    summary = train(train_cfg("ckpt_path=last", "trainer.max_steps=7"))
    assert summary["steps"] == 7 and summary["resumed_from"].endswith("last.ckpt")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 7
    assert ckpt["optimizer_states"][0]["state"][0]["step"] == 7  # optimizer state continued, not restarted
    # Both attempts' metrics are kept, steps continue.
    assert [int(r["step"]) for r in read_metrics(run)] == list(range(1, 8))
    # EMA continued from the saved EMA (three more updates), not from a fresh copy of the model.
    key = "ema.blocks.0.mlp.fc1.weight"
    assert not torch.equal(first["state_dict"][key], ckpt["state_dict"][key])


def test_same_seed_gives_the_same_loss_curve(train_cfg, tmp_path):
    losses = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(train_cfg(f"seed={seed}", run=run))
        losses.append([float(r["train/loss"]) for r in read_metrics(tmp_path / run)])
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_ema_update_rule():
    model = torch.nn.Linear(3, 2)
    ema = make_ema(model)
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters()))
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    update_ema(ema, model, decay=0.9)
    for old, new, cur in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * cur)


@OBJECTIVES.register("nan_after_2_steps")
class NaNAfterTwoSteps(DDPMObjective):
    name = "nan_after_2_steps"
    calls = 0

    def loss(self, model_fn, x0, model_kwargs):
        terms = super().loss(model_fn, x0, model_kwargs)
        NaNAfterTwoSteps.calls += torch.is_grad_enabled()  # training steps (not the guard's check before a save)
        if NaNAfterTwoSteps.calls > 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


def test_nan_loss_stops_with_one_clear_error_and_keeps_checkpoints(train_cfg, tmp_path):
    NaNAfterTwoSteps.calls = 0
    with pytest.raises(DitlabError, match="loss became nan at step 2.*optim.lr"):
        train(train_cfg("objective.name=nan_after_2_steps"))
    assert (tmp_path / "run" / "checkpoints" / "step0000002.ckpt").is_file()
    assert not (tmp_path / "run" / "summary.json").exists()


def test_nan_loss_between_logging_steps_never_reaches_a_checkpoint(train_cfg, tmp_path):
    # The loss is read back only on logging steps (no per-step GPU sync); the checkpoint save checks it too.
    NaNAfterTwoSteps.calls = 0
    with pytest.raises(DitlabError, match="loss became nan at step 2"):
        train(train_cfg("objective.name=nan_after_2_steps", "trainer.log_every_n_steps=10", "trainer.max_steps=8"))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step0000002.ckpt"]
    # step 4's saves (NaN weights) were refused: last.ckpt is still step 2's
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.patch_size=3", "patch size 3 does not divide the model input size 8"),
        ("model.num_heads=3", "not divisible by model.num_heads=3"),
        ("trainer.max_steps=0", "trainer.max_steps=0 is not valid: give an integer >= 1"),
        ("data.batch_size=0", "data.batch_size=0 is not valid: give an integer >= 1"),
        ("block.name=nope", "unknown block 'nope'; registered: adaln, adaln_zero, cross_attn, in_context"),
        ("objective.name=nope", "unknown objective 'nope'"),
        ("ckpt_path=last", "nothing to resume"),
        ("ckpt_path=/no/such.ckpt", "checkpoint /no/such.ckpt not found"),
    ],
)
def test_bad_input_fails_before_any_work(train_cfg, tmp_path, override, message):
    with pytest.raises(DitlabError, match=message):
        train(train_cfg(override))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_finished_run_is_never_overwritten_without_permission(train_cfg, tmp_path):
    train(train_cfg())
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(DitlabError, match="already holds a finished run.*ckpt_path=last.*overwrite=true"):
        train(train_cfg("seed=5"))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    summary = train(train_cfg("seed=5", "overwrite=true"))
    assert summary["seed"] == 5
