"""REPA as an auxiliary loss: gradient reach, frozen encoders (offline ones and a stubbed DINOv2), costs."""

import csv
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from conftest import randomize_weights

from ditlab.auxloss.repa import REPA
from ditlab.auxloss.targets import to_grid_tokens
from ditlab.errors import DitlabError
from ditlab.models.dit import DiT
from ditlab.training.train import train

DIGITS = SimpleNamespace(name="digits", channels=1, resolution=8)


def make_encoder() -> nn.Module:
    """A test-made frozen encoder (``aux.encoder=python:test_repa:make_encoder``): BatchNorm and dropout
    behave differently in train mode, so a forward outside eval mode would show."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Dropout(0.5), nn.Conv2d(8, 12, 2, stride=2)
    )


def small_model(block="adaln_zero", depth=3) -> DiT:
    torch.manual_seed(0)
    model = DiT(
        input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=depth, num_heads=2, num_classes=10, block=block
    )
    randomize_weights(model, std=0.05, only_zero=True)  # past init: zero gates would hide the trunk's gradient
    return model


def repa_grads(model: DiT, depth: int) -> tuple[REPA, dict[str, torch.Tensor | None]]:
    repa = REPA(model, DIGITS, encoder="python:test_repa:make_encoder", depth=depth, projector_dim=16)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    with repa.watch(model):
        model(images, torch.randint(0, 1000, (4,)), torch.randint(0, 10, (4,)))
    terms = repa.add_to({"loss": torch.zeros(4)}, images)
    terms["repa"].mean().backward()  # REPA's term alone
    grads = {f"model.{k}": p.grad for k, p in model.named_parameters()}
    grads.update({f"aux.{k}": p.grad for k, p in repa.named_parameters()})
    return repa, grads


@pytest.mark.parametrize("block", ["adaln_zero", "in_context"])
def test_repa_gradient_reaches_only_the_trunk_up_to_its_block_and_the_projector(block):
    model = small_model(block)
    repa, grads = repa_grads(model, depth=2)
    reached = {k for k, g in grads.items() if g is not None and g.any()}
    trunk = {k for k in grads if k.startswith(("model.x_embedder", "model.blocks.0.", "model.blocks.1."))}
    assert {k for k in grads if k.startswith("aux.projector")} <= reached
    assert {
        "model.x_embedder.proj.weight",
        "model.blocks.0.attn.qkv.weight",
        "model.blocks.1.mlp.fc2.weight",
    } <= reached
    assert reached - {k for k in grads if k.startswith("aux.")} <= trunk | {
        k for k in grads if k.startswith(("model.t_embedder", "model.y_embedder"))
    }  # conditioning feeds blocks 1-2
    assert not any(k.startswith(("model.blocks.2.", "model.final_layer")) for k in reached)
    encoder = repa.target.module
    assert not encoder.training and all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    assert not any("target" in k for k in repa.state_dict())  # the frozen encoder is never checkpointed


def test_frozen_encoder_runs_in_eval_mode_without_gradients():
    repa = REPA(small_model(), DIGITS, encoder="python:test_repa:make_encoder", depth=1, projector_dim=8)
    repa.train()  # Lightning puts the module in train mode; the encoder must stay in eval
    bn = repa.target.module[1]
    stats = bn.running_mean.clone()
    x = torch.randn(4, 1, 8, 8)
    a, b = repa.target(x), repa.target(x)
    assert torch.equal(a, b) and not a.requires_grad  # no dropout, no graph
    assert torch.equal(bn.running_mean, stats)  # no BatchNorm updates
    assert repa.target_dim == 12


def test_encoder_outputs_become_targets_on_the_dit_token_grid():
    assert to_grid_tokens(torch.randn(2, 16, 5), 4).shape == (2, 16, 5)  # tokens already on the grid
    tokens = torch.arange(64.0).view(1, 64, 1)  # an 8x8 token grid pooled to 4x4, row-major
    pooled = to_grid_tokens(tokens, 4)
    assert pooled.shape == (1, 16, 1) and pooled[0, 0, 0] == (0 + 1 + 8 + 9) / 4
    assert to_grid_tokens(torch.randn(2, 7, 2, 2), 4).shape == (2, 16, 7)  # small maps are upsampled
    assert to_grid_tokens(torch.randn(2, 9), 4).shape == (2, 1, 9)  # one vector: every token aligns with it
    with pytest.raises(DitlabError, match="not a square grid"):
        to_grid_tokens(torch.randn(2, 10, 3), 4)


def test_default_dinov2_encoder_gets_224px_imagenet_normalised_rgb_and_patch_tokens(monkeypatch):
    seen = {}

    class FakeDinov2(nn.Module):  # torch.hub's dinov2_vitb14 interface: forward_features -> dict
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 24)

        def forward_features(self, x):
            seen["x"] = x
            tokens = nn.functional.avg_pool2d(x, 14).flatten(2).transpose(1, 2)  # (N, 256, 3)
            return {"x_norm_patchtokens": self.lin(tokens), "x_norm_clstoken": None}

    monkeypatch.setattr(
        torch.hub,
        "load",
        lambda repo, name: FakeDinov2() if (repo, name) == ("facebookresearch/dinov2", "dinov2_vitb14") else None,
    )
    repa = REPA(small_model(), DIGITS, depth=1, projector_dim=8)  # all defaults: encoder=dinov2_vitb14
    assert repa.target_dim == 24
    x = seen["x"]
    assert x.shape == (1, 3, 224, 224)  # grey digits repeated to RGB and resized like REPA
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 0, 0], (0.5 - mean) / std)  # zeros in [-1, 1] -> 0.5, then ImageNet


def test_dinov2_unavailable_offline_is_one_line(monkeypatch):
    def fail(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load", fail)
    with pytest.raises(DitlabError, match="cannot load dinov2_vitb14 from torch.hub .* use aux.encoder=digits"):
        REPA(small_model(), DIGITS, depth=1)


@pytest.mark.parametrize(
    "kwargs,data,message",
    [
        (dict(depth=4), DIGITS, "aux.depth=4 is not a block of this 3-block model; use 1..3"),
        (dict(depth=0), DIGITS, "aux.depth=0 is not a block"),
        (dict(depth=1, encoder="clip"), DIGITS, "unknown REPA encoder 'clip'"),
        (dict(depth=1, encoder="python:no_such_module:f"), DIGITS, "cannot import the REPA encoder factory"),
    ],
)
def test_bad_repa_options_are_one_line(kwargs, data, message):
    with pytest.raises(DitlabError, match=message):
        REPA(small_model(), data, **kwargs)


def test_repa_trains_with_the_flow_objective_and_reports_its_cost_apart(train_cfg, tmp_path):
    base = train(train_cfg("objective=flow", run="base"))
    summary = train(
        train_cfg("objective=flow", "aux=repa", "aux.encoder=digits", "aux.depth=1", "aux.projector_dim=24")
    )
    assert summary["aux"]["name"] == "repa" and summary["aux"]["target_dim"] == 64
    assert summary["gflops"] == base["gflops"] and summary["params"] == base["params"]  # the DiT is unchanged
    # FAST: 8x8 digits, patch 4 -> 4 tokens of width 32; projector 32 -> 24 -> 24 -> 64 per token.
    assert summary["aux_projector_gflops"] == pytest.approx(4 * (32 * 24 + 24 * 24 + 24 * 64) / 1e9, abs=1e-6)
    # The digits CNN's conv trunk on one 8x8 image: 8·8·32·9 + 4·4·64·32·9 + 4·4·64·64·9 MACs.
    assert summary["aux_encoder_gflops"] == pytest.approx(903_168 / 1e9, abs=1e-6)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    repa = [float(r["train/repa"]) for r in rows if r.get("train/repa")]
    assert repa and all(-1 <= v <= 1 for v in repa)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "aux.projector.4.weight" in state and not any(k.startswith("aux.target") for k in state)
