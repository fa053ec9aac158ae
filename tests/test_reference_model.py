"""The DiT backbone against the official implementation's numbers (DiT's models.py: sin-cos pos-embed,
timestep embedding, an end-to-end tiny DiT)."""

import math

import numpy as np
import pytest
import torch

from ditlab.models.dit import DiT
from ditlab.models.layers import TimestepEmbedder, get_2d_sincos_pos_embed
from ditlab.samplers.guidance import GuidedModel


def tiny_official_dit(**kw) -> DiT:
    args = dict(
        input_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=64,
        depth=2,
        num_heads=4,
        class_dropout_prob=0.1,
        num_classes=10,
    )
    return DiT(**{**args, **kw}).eval()


def deterministic_fill(model: DiT) -> None:
    """The end-to-end reference check's weights: every entry but pos_embed := 0.02 sin(0.37 i + 1.3 (j + 1)),
    j = key position."""
    sd = model.state_dict()
    for j, key in enumerate(sd):
        if key == "pos_embed":
            continue
        i = torch.arange(sd[key].numel(), dtype=torch.float32)
        sd[key] = (0.02 * torch.sin(0.37 * i + 1.3 * (j + 1))).reshape(sd[key].shape)
    model.load_state_dict(sd)


def reference_inputs():
    x = torch.sin(0.11 * torch.arange(512.0)).reshape(2, 4, 8, 8)
    return x, torch.tensor([10, 500]), torch.tensor([3, 10])


def test_state_dict_keys_follow_official_order():
    keys = list(tiny_official_dit().state_dict())
    assert keys[:8] == [
        "pos_embed",
        "x_embedder.proj.weight",
        "x_embedder.proj.bias",
        "t_embedder.mlp.0.weight",
        "t_embedder.mlp.0.bias",
        "t_embedder.mlp.2.weight",
        "t_embedder.mlp.2.bias",
        "y_embedder.embedding_table.weight",
    ]
    assert keys[8:18] == [
        f"blocks.0.{k}"
        for k in (
            "attn.qkv.weight",
            "attn.qkv.bias",
            "attn.proj.weight",
            "attn.proj.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
            "adaLN_modulation.1.weight",
            "adaLN_modulation.1.bias",
        )
    ]
    assert keys[28:] == [
        "final_layer.linear.weight",
        "final_layer.linear.bias",
        "final_layer.adaLN_modulation.1.weight",
        "final_layer.adaLN_modulation.1.bias",
    ]


def test_output_is_exactly_zero_at_init():
    model = tiny_official_dit()
    x, t, y = reference_inputs()
    out = model(x, t, y)
    assert out.shape == (2, 8, 8, 8)
    assert torch.count_nonzero(out) == 0
    # adaLN-Zero: every block is the identity at init.
    tokens = torch.randn(2, 16, 64)
    from ditlab.models.blocks import Conditioning

    cond = Conditioning(c=torch.randn(2, 64), tokens=torch.randn(2, 2, 64))
    for block in model.blocks:
        assert torch.equal(block(tokens, cond), tokens)


def assert_official_outputs(model: DiT) -> None:
    """The official implementation's outputs for the deterministic weights."""
    x, t, y = reference_inputs()
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == (2, 8, 8, 8)
    assert out.sum().item() == pytest.approx(1.835214376449585, abs=2e-5)
    assert out.abs().sum().item() == pytest.approx(105.59759521484375, rel=1e-5)
    torch.testing.assert_close(
        out[0, :, 0, 0],
        torch.tensor(
            [-0.07596491, 0.10313635, 0.13267842, -0.04283445, -0.12102419, 0.02582607, 0.12680487, -0.00801931]
        ),
        atol=1e-6,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        out[1, :, 7, 6],
        torch.tensor(
            [-0.13591546, 0.25192198, 0.22672051, -0.16612072, -0.23690361, 0.13189906, 0.27926177, -0.06663053]
        ),
        atol=1e-6,
        rtol=1e-5,
    )


def test_end_to_end_forward_matches_official():
    model = tiny_official_dit()
    deterministic_fill(model)
    assert_official_outputs(model)


def test_first3_guidance_reproduces_official_forward_with_cfg():
    model = tiny_official_dit()
    deterministic_fill(model)
    x, _, _ = reference_inputs()
    guided = GuidedModel(model, pred_channels=4, null_label=10, scale=4.0, channels="first3")
    with torch.no_grad():
        out = guided(x[:1], torch.tensor([10]), torch.tensor([3]), noise_level=0.01)
        cond = model(x[:1], torch.tensor([10]), torch.tensor([3]))
    torch.testing.assert_close(
        out[0, :, 0, 0],
        torch.tensor(
            [-0.07546276, 0.10302164, 0.13214909, -0.04283445, -0.12102419, 0.02582607, 0.12680487, -0.00801931]
        ),
        atol=1e-6,
        rtol=1e-5,
    )
    torch.testing.assert_close(out[:, 3:], cond[:, 3:], rtol=1e-5, atol=1e-6)  # channels 3..7: plain cond forward
    assert guided.nfe == 2


def test_all_channel_guidance_guides_every_prediction_channel_but_not_sigma():
    model = tiny_official_dit()
    deterministic_fill(model)
    x, _, _ = reference_inputs()
    t, y = torch.tensor([10]), torch.tensor([3])
    with torch.no_grad():
        out = GuidedModel(model, pred_channels=4, null_label=10, scale=4.0, channels="all")(x[:1], t, y, 0.5)
        cond = model(x[:1], t, y)
        uncond = model(x[:1], t, torch.tensor([10]))
    torch.testing.assert_close(out[:, :4], uncond[:, :4] + 4.0 * (cond[:, :4] - uncond[:, :4]))
    torch.testing.assert_close(out[:, 4:], cond[:, 4:], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[:, 3], cond[:, 3])


def test_guidance_interval_skips_the_unconditional_pass_outside_it():
    model = tiny_official_dit()
    deterministic_fill(model)
    x, _, _ = reference_inputs()
    guided = GuidedModel(model, pred_channels=4, null_label=10, scale=4.0, interval=[0.0, 0.5])
    with torch.no_grad():
        out = guided(x[:1], torch.tensor([900]), torch.tensor([3]), noise_level=0.9)
        cond = model(x[:1], torch.tensor([900]), torch.tensor([3]))
    assert torch.equal(out, cond) and guided.nfe == 1


def test_patch_layout_and_unpatchify():
    model = tiny_official_dit()
    x = torch.randn(1, 4, 8, 8)
    tokens = model.x_embedder(x)
    w = model.x_embedder.proj.weight.reshape(64, -1)  # flattened (channel, row, col)
    patch = x[0, :, 2:4, 6:8].reshape(-1)  # token 7 = grid row 1, col 3
    torch.testing.assert_close(tokens[0, 7], w @ patch + model.x_embedder.proj.bias, atol=1e-5, rtol=1e-5)
    ramp = (32 * torch.arange(16).view(1, 16, 1) + torch.arange(32).view(1, 1, 32)).float()
    assert model.unpatchify(ramp)[0, 1, 2, 3].item() == 169  # token 5, slot (0*2+1)*8+1


def test_sincos_pos_embed_reference_values():
    small = get_2d_sincos_pos_embed(8, 2)
    np.testing.assert_allclose(
        small[1], [0.8414709848, 0.0099998333, 0.5403023059, 0.9999500004, 0, 0, 1, 1], atol=1e-9
    )
    np.testing.assert_allclose(
        small[2], [0, 0, 1, 1, 0.8414709848, 0.0099998333, 0.5403023059, 0.9999500004], atol=1e-9
    )
    big = get_2d_sincos_pos_embed(1152, 16)
    assert big.shape == (256, 1152)
    assert big.sum() == pytest.approx(134598.94780388544, abs=1e-6)
    assert np.abs(big).sum() == pytest.approx(165457.32147482215, abs=1e-6)
    assert big[53, 0] == pytest.approx(math.sin(5)) and big[53, 288] == pytest.approx(math.cos(5))
    assert big[53, 576] == pytest.approx(math.sin(3)) and big[53, 864] == pytest.approx(math.cos(3))
    assert big[53, 143] == pytest.approx(0.051601932677005274, abs=1e-12)


def test_timestep_embedding_reference_values():
    emb = TimestepEmbedder.timestep_embedding(torch.tensor([0, 1, 250, 999]), 256)
    assert emb[0, :128].eq(1).all() and emb[0, 128:].eq(0).all()
    assert emb[1, 0].item() == pytest.approx(0.5403023362159729, abs=1e-7)
    assert emb[1, 129].item() == pytest.approx(0.8019617795944214, abs=1e-6)
    assert emb[2].sum().item() == pytest.approx(59.46253967285156, abs=1e-3)
    assert emb[3].sum().item() == pytest.approx(52.50468444824219, abs=1e-3)
    torch.testing.assert_close(
        TimestepEmbedder.timestep_embedding(torch.tensor([3]), 6)[0],
        torch.tensor([-0.98999250, 0.99032068, 0.99997914, 0.14112000, 0.13879810, 0.00646326]),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        TimestepEmbedder.timestep_embedding(torch.tensor([3]), 5)[0],
        torch.tensor([-0.98999250, 0.99955004, 0.14112000, 0.02999550, 0.0]),
        atol=1e-6,
        rtol=0,
    )


def test_label_dropout_uses_null_class_only_in_training():
    model = tiny_official_dit()
    emb = model.y_embedder
    assert emb.embedding_table.num_embeddings == 11  # 10 classes + null row
    labels = torch.arange(10).repeat(100)
    torch.manual_seed(0)
    dropped = emb.token_drop(labels)
    frac = (dropped == 10).float().mean().item()
    assert 0.05 < frac < 0.15
    assert torch.equal(emb(labels, train=False), emb.embedding_table(labels))


def test_param_count_matches_paper_closed_form():
    # DiT-S/8 at 32x32x4 with 1000 classes: 33,148,160 parameters in all (official models.py).
    model = DiT(input_size=32, patch_size=8, hidden_size=384, depth=12, num_heads=6, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == 33_148_160
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 33_142_016
