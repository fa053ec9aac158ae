"""Official checkpoints -> ditlab: from_official (official state-dict keys, official outputs) and fine-tuning with init_from."""

import argparse

import numpy as np
import pytest
import torch
from conftest import compose_train, randomize_weights
from test_reference_model import assert_official_outputs, deterministic_fill, reference_inputs, tiny_official_dit

from ditlab.build import build_encoder, build_objective, build_sampler
from ditlab.errors import DitlabError
from ditlab.models import from_official
from ditlab.models.dit import DiT
from ditlab.samplers.generate import generate
from ditlab.training.train import train

# The reference tiny DiT is no preset: name a preset of the same heads (tiny: 4) and override depth and width.
TINY = dict(name="DiT-tiny/2", input_size=8, num_classes=10, depth=2, hidden_size=64)
# The model the FAST training config builds (digits 8x8x1, patch 4, 10 classes).
FAST_MODEL = dict(input_size=8, patch_size=4, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=10)


def official_state_dict() -> dict:
    model = tiny_official_dit()
    deterministic_fill(model)
    return model.state_dict()


def test_bare_state_dict_file_gives_the_official_outputs(tmp_path):
    torch.save(official_state_dict(), tmp_path / "DiT-tiny-2-16x16.pt")  # the published files' format
    model = from_official(tmp_path / "DiT-tiny-2-16x16.pt", **TINY)
    assert not model.training and model.block_name == "adaln_zero"
    assert_official_outputs(model)
    assert_official_outputs(from_official(official_state_dict(), **{**TINY, "name": "DiT-tiny-2"}))


def test_state_dict_without_pos_embed_gets_the_fixed_table():
    sd = official_state_dict()
    del sd["pos_embed"]
    assert_official_outputs(from_official(sd, **TINY))


def test_official_train_py_checkpoint_uses_ema_and_its_pickled_args_are_allowed(tmp_path):
    ema = official_state_dict()
    raw = {k: torch.zeros_like(v) if k != "pos_embed" else v for k, v in ema.items()}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))]).state_dict()
    args = argparse.Namespace(model="DiT-XL/2", image_size=256, global_batch_size=256, results_dir="results")
    torch.save({"model": raw, "ema": ema, "opt": opt, "args": args}, tmp_path / "0400000.pt")
    assert_official_outputs(from_official(tmp_path / "0400000.pt", **TINY))
    plain = from_official(tmp_path / "0400000.pt", use_ema=False, **TINY)
    x, t, y = reference_inputs()
    assert torch.count_nonzero(plain(x, t, y)) == 0  # the all-zero "model" weights were taken


class NotAllowed:
    pass


def test_other_pickled_objects_are_refused_with_the_way_out(tmp_path):
    torch.save({"ema": official_state_dict(), "extra": NotAllowed()}, tmp_path / "odd.pt")
    refused = r"odd\.pt holds Python objects .*NotAllowed.* weights-only loading will not run.*Namespace.*re-save"
    with pytest.raises(DitlabError, match=refused):
        from_official(tmp_path / "odd.pt", **TINY)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(TINY, name="DiT-S/2", depth=None, hidden_size=None),
            r"does not fit DiT-S/2 \(input_size=8, num_classes=10\): first mismatching key 'pos_embed' has shape "
            r"\(1, 16, 64\) in the checkpoint but \(1, 16, 384\) in the model",
        ),
        (
            dict(TINY, num_classes=1000),
            r"first mismatching key 'y_embedder.embedding_table.weight' has shape \(11, 64\) in the checkpoint but "
            r"\(1001, 64\)",
        ),
        (
            dict(TINY, input_size=16),
            r"first mismatching key 'pos_embed' has shape \(1, 16, 64\) in the checkpoint "
            r"but \(1, 64, 64\)",
        ),
        (dict(TINY, depth=3), r"key 'blocks.2.attn.qkv.weight' is missing"),
        (dict(TINY, depth=1), r"has key 'blocks.1.attn.qkv.weight' that the model lacks"),
    ],
)
def test_state_dict_of_another_size_names_the_first_mismatching_key(tmp_path, kwargs, message):
    torch.save(official_state_dict(), tmp_path / "sd.pt")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with pytest.raises(DitlabError, match=message):
        from_official(tmp_path / "sd.pt", **kwargs)


@pytest.mark.parametrize(
    "name,message",
    [
        ("XL/2", "not of the form DiT-<size>/<patch>"),
        ("DiT-XXL/2", "unknown model size 'XXL' in the model name; known sizes: B, L, S, XL, small, tiny"),
    ],
)
def test_bad_model_names(name, message):
    with pytest.raises(DitlabError, match=message):
        from_official(official_state_dict(), name=name)


def test_missing_file_and_foreign_dicts(tmp_path):
    with pytest.raises(DitlabError, match="checkpoint file not found"):
        from_official(tmp_path / "nope.pt", **TINY)
    with pytest.raises(DitlabError, match="neither a DiT state dict nor a checkpoint .*top-level keys: step"):
        from_official({"step": 3}, **TINY)


def test_ditlab_checkpoint_rebuilds_its_own_architecture(train_cfg, tmp_path):
    train(train_cfg("block=in_context"))
    ckpt_path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = from_official(ckpt_path)  # name/input_size/num_classes come from the checkpoint
    assert model.block_name == "in_context" and model.context_tokens == 2 and model.in_channels == 1
    ema = {k[4:]: v for k, v in torch.load(ckpt_path, weights_only=True)["state_dict"].items() if k.startswith("ema.")}
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


def test_official_weights_sample_through_ditlabs_sampler():
    model = from_official(official_state_dict(), **TINY)
    cfg = compose_train("sampler.steps=5")
    objective, sampler, encoder = build_objective(cfg.objective), build_sampler(cfg.sampler), build_encoder(cfg.encoder)
    batches = list(
        generate(
            model,
            objective,
            sampler,
            encoder,
            torch.tensor([3, 7]),
            (4, 8),
            {"scale": 1.5, "channels": "first3"},
            batch_size=2,
            seed=0,
            num_classes=10,
        )
    )
    images, labels, nfe = batches[0]
    assert images.shape == (2, 8, 8, 4) and images.dtype == np.uint8 and labels.tolist() == [3, 7] and nfe == 10


# ------------------------------------------------------------------------------------- fine-tuning


def random_fast_state_dict() -> dict:
    torch.manual_seed(3)
    model = DiT(**FAST_MODEL)
    randomize_weights(model, std=0.05)
    return model.state_dict()


def test_init_from_an_official_state_dict_starts_model_and_ema_from_it(train_cfg, tmp_path):
    sd = random_fast_state_dict()
    torch.save(sd, tmp_path / "init.pt")
    summary = train(train_cfg(f"init_from={tmp_path / 'init.pt'}", "optim.lr=0", "trainer.max_steps=2"))
    assert summary["init_from"] == str(tmp_path / "init.pt")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in sd.items():  # lr 0: nothing moved, so both copies still hold the loaded weights
        assert torch.equal(ckpt[f"model.{key}"], value) and torch.equal(ckpt[f"ema.{key}"], value), key


def test_init_from_a_ditlab_checkpoint_fine_tunes_from_its_ema(train_cfg, tmp_path):
    train(train_cfg("block=adaln", run="base"))
    base = tmp_path / "base" / "checkpoints" / "last.ckpt"
    summary = train(train_cfg("block=adaln", f"init_from={base}", "optim.lr=0", run="tuned"))
    assert summary["steps"] == 4 and summary["resumed_from"] is None  # a new run, not a resume
    first = torch.load(base, weights_only=True)["state_dict"]
    tuned = torch.load(tmp_path / "tuned" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    keys = [k[len("ema.") :] for k in first if k.startswith("ema.")]
    assert keys and all(torch.equal(tuned[f"model.{k}"], first[f"ema.{k}"]) for k in keys)
    assert not all(torch.equal(first[f"model.{k}"], first[f"ema.{k}"]) for k in keys)  # EMA, not the raw weights


def test_init_from_of_another_size_fails_naming_the_option_and_key(train_cfg, tmp_path):
    torch.save(official_state_dict(), tmp_path / "xl.pt")
    with pytest.raises(
        DitlabError,
        match=r"init_from=.*xl\.pt does not fit the model: first mismatching key "
        r"'pos_embed' has shape \(1, 16, 64\) in the checkpoint but \(1, 4, 32\)",
    ):
        train(train_cfg(f"init_from={tmp_path / 'xl.pt'}"))
    with pytest.raises(DitlabError, match=r"init_from=.*missing\.pt: file not found"):
        train(train_cfg(f"init_from={tmp_path / 'missing.pt'}"))
    assert not (tmp_path / "run" / "checkpoints").exists()
