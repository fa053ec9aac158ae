"""``ditlab-eval ckpt=... eval.metrics=[val_loss]``: a checkpoint's val_loss, the value its training logged."""

import json

import pytest
from omegaconf import OmegaConf
from test_val_loss import LOSS_ONLY, SHARED_CACHE

from ditlab.errors import DitlabError
from ditlab.metrics.val_loss import DEFAULTS
from ditlab.tools.checkpoint_val_loss import val_loss_settings
from ditlab.tools.evaluate import main
from ditlab.training.train import train


def scored(capsys, *args):
    """``ditlab-eval`` as typed; the JSON it printed."""
    main([*args, "device=cpu", "progress=false"])
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def without_seconds(recipe):
    return {k: v for k, v in recipe.items() if k != "seconds"}


def test_ditlab_eval_gives_the_val_loss_the_training_logged_at_each_checkpoints_step(train_cfg, tmp_path, capsys):
    # val_loss (32 images x 4 times, from the run's stored eval.val_loss) at steps 2 and 4; checkpoints at both.
    fast = ["trainer.max_steps=4", "ema.decay=0.5", "optim.lr=3e-3", "eval.val_loss.every_n_steps=2"]
    train(train_cfg(*fast, *LOSS_ONLY, "final_samples.num_samples=4", "final_samples.batch_size=4"))
    run = tmp_path / "run"
    logged = {r["step"]: r for r in map(json.loads, (run / "eval" / "metrics.jsonl").read_text().splitlines())}
    assert sorted(logged) == [2, 4]
    out = tmp_path / "val_loss.json"
    checkpoints = {4: run, 2: run / "checkpoints" / "step0000002.ckpt"}  # the run dir: its last.ckpt (step 4)
    for step, ckpt in checkpoints.items():
        result = scored(capsys, f"ckpt={ckpt}", "eval.metrics=[val_loss]", f"out={out}")
        assert result == json.loads(out.read_text())
        out.unlink()
        assert (result["step"], result["weights"]) == (step, "ema")
        # The same code on the same EMA weights, inputs, times and noise, on the same device: bit for bit.
        assert result["val_loss"] == logged[step]["val_loss"]
        assert result["val_loss_strata"] == logged[step]["val_loss_strata"]
        assert without_seconds(result["val_loss_recipe"]) == without_seconds(logged[step]["val_loss_recipe"])
        assert result["val_loss_options"]["num_images"] == 32 and result["val_loss_options"]["num_times"] == 4
        assert set(result["val_loss_options"]["from"].values()) == {"checkpoint"}
    fewer = scored(capsys, f"ckpt={run}", "eval.metrics=[val_loss]", "eval.val_loss.num_times=2")
    assert fewer["val_loss_options"]["from"]["num_times"] == "command line" and len(fewer["val_loss_strata"]) == 2
    assert fewer["val_loss"] != logged[4]["val_loss"]
    # With sample metrics in the same command: both sets of values, val_loss unchanged.
    both = scored(
        capsys, f"ckpt={run}", f"samples={run}", "eval.metrics=[val_loss,fd_digits]", f"paths.cache_dir={SHARED_CACHE}"
    )
    assert both["val_loss"] == logged[4]["val_loss"] and both["fd_digits"] > 0 and both["num_samples"] == 4


def test_options_come_from_the_command_line_then_the_checkpoint_then_the_defaults():
    stored = OmegaConf.create({"eval": {"val_loss": {"num_images": 32, "seed": 5, "every_n_steps": 100}}})
    given = {"num_images": None, "num_times": 2, "seed": None, "batch_size": None}
    options, origin = val_loss_settings(given, stored)
    assert {k: options[k] for k in ("num_images", "num_times", "seed")} == {"num_images": 32, "num_times": 2, "seed": 5}
    assert origin["num_images"] == "checkpoint" and origin["num_times"] == "command line"
    assert origin["batch_size"] == "default" and options["batch_size"] == DEFAULTS["batch_size"]
    before_val_loss = OmegaConf.create({"eval": {"metrics": []}})  # a run trained before val_loss existed
    options, origin = val_loss_settings({}, before_val_loss)
    assert options == DEFAULTS and set(origin.values()) == {"default"}
    with pytest.raises(DitlabError, match="stored config has eval.val_loss.bogus"):
        val_loss_settings({}, OmegaConf.create({"eval": {"val_loss": {"bogus": 1}}}))
