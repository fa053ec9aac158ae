"""Efficiency switches, each a config key, each giving the same numbers on CPU (within tolerance).

model.attn_backend (sdpa | math), model.grad_checkpointing, model.compile, trainer.precision.
"""

import csv

import pytest
import torch
from conftest import compose_train, randomize_weights

from ditlab.build import build_model
from ditlab.models.dit import DiT
from ditlab.models.layers import Attention, CrossAttention
from ditlab.training.train import train

BLOCK_NAMES = ["adaln_zero", "adaln", "cross_attn", "in_context"]


def nontrivial_dit(block: str, **kw) -> DiT:
    torch.manual_seed(0)
    model = DiT(input_size=8, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10, block=block, **kw)
    randomize_weights(model, std=0.1)
    return model


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 4, 8, 8, generator=g), torch.tensor([1, 250, 500, 999]), torch.tensor([0, 3, 9, 10])


def losses(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def loss_and_grads(model: DiT, seed: int = 0):
    model.train()
    model.zero_grad()
    x, t, y = inputs()
    torch.manual_seed(seed)  # same label-dropout draw in both runs
    loss = (model(x, t, y) ** 2).mean()
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_sdpa_and_math_attention_agree(block):
    sdpa = nontrivial_dit(block, attn_backend="sdpa")
    math = nontrivial_dit(block, attn_backend="math")
    math.load_state_dict(sdpa.state_dict())
    x, t, y = inputs()
    with torch.no_grad():
        torch.testing.assert_close(sdpa.eval()(x, t, y), math.eval()(x, t, y), rtol=1e-5, atol=1e-5)
    loss_s, grads_s = loss_and_grads(sdpa)
    loss_m, grads_m = loss_and_grads(math)
    torch.testing.assert_close(loss_s, loss_m, rtol=1e-5, atol=1e-6)
    for k in grads_s:
        torch.testing.assert_close(grads_s[k], grads_m[k], rtol=1e-4, atol=1e-6)


def test_attn_backend_key_reaches_every_attention_layer():
    cfg = compose_train("model.attn_backend=math", "block=cross_attn")
    model = build_model(cfg.model, cfg.block, in_channels=1, input_size=8, out_channels=2, num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, (Attention, CrossAttention))]
    assert len(layers) == 2 * cfg.model.depth and all(m.backend == "math" for m in layers)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_gradient_checkpointing_gives_the_same_loss_and_grads(block):
    plain = nontrivial_dit(block)
    ckpt = nontrivial_dit(block, grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    loss_p, grads_p = loss_and_grads(plain)
    loss_c, grads_c = loss_and_grads(ckpt)
    assert torch.equal(loss_p, loss_c)
    assert grads_p.keys() == grads_c.keys()
    for k in grads_p:
        torch.testing.assert_close(grads_c[k], grads_p[k], rtol=1e-6, atol=1e-7)


def test_grad_checkpointing_key_trains_with_the_same_loss_curve(train_cfg, tmp_path):
    train(train_cfg(run="plain"))
    train(train_cfg("model.grad_checkpointing=true", run="ckpt"))
    assert losses(tmp_path / "ckpt") == pytest.approx(losses(tmp_path / "plain"), rel=1e-6)


def test_bf16_mixed_precision_trains_with_a_close_loss_curve(train_cfg, tmp_path):
    fp32 = train(train_cfg(run="fp32"))
    bf16 = train(train_cfg("trainer.precision=bf16-mixed", run="bf16"))
    assert bf16["sampling"]["precision"] == "bf16-mixed"
    a, b = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert len(a) == len(b) == 4 and a != b  # bf16 autocast really ran ...
    assert b == pytest.approx(a, rel=5e-2)  # ... and changed the loss by rounding only
    assert fp32["final_loss"] == pytest.approx(bf16["final_loss"], rel=5e-2)


def test_torch_compile_trains_with_the_same_loss_curve(train_cfg, tmp_path, monkeypatch):
    # A cold torch.compile takes tens of seconds on CPU: one short run, the smallest model. Inductor
    # draws random numbers (label dropout) with its own generator unless told to fall back to eager's.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    train(train_cfg("trainer.max_steps=2", run="eager"))
    compiled = train(train_cfg("trainer.max_steps=2", "model.compile=true", run="compiled"))
    assert compiled["steps"] == 2
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)
    ckpt = torch.load(tmp_path / "compiled" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "model.blocks.0.attn.qkv.weight" in ckpt["state_dict"]  # plain keys: loadable without compile
