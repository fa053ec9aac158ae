"""Modern-recipe block options (block.norm / mlp / qk_norm / position) with every conditioning design."""

import pytest
import torch
import torch.nn as nn
from conftest import randomize_weights

from ditlab.cli import compose
from ditlab.errors import DitlabError
from ditlab.models.blocks import Conditioning
from ditlab.models.dit import DiT
from ditlab.models.layers import Attention
from ditlab.models.options import SwiGLU, swiglu_hidden_size
from ditlab.models.rope import RoPE2D
from ditlab.tools.flops import closed_form_gflops, measured_gflops

BLOCK_NAMES = ["adaln_zero", "adaln", "cross_attn", "in_context"]
OPTION_SETS = {
    "rmsnorm": dict(block_kwargs={"norm": "rmsnorm"}),
    "swiglu": dict(block_kwargs={"mlp": "swiglu"}),
    "qk_norm": dict(block_kwargs={"qk_norm": True}),
    "rope2d": dict(position="rope2d"),
    "all": dict(block_kwargs={"norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True}, position="rope2d"),
}


def small_dit(block: str, **kw) -> DiT:
    args = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    return DiT(**{**args, **kw}, block=block)


def inputs(n: int = 3):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, 4, 8, 8, generator=g),
        torch.randint(0, 1000, (n,), generator=g),
        torch.randint(0, 10, (n,), generator=g),
    )


@pytest.mark.parametrize("options", list(OPTION_SETS))
@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_every_option_composes_with_every_design(block, options):
    model = small_dit(block, **OPTION_SETS[options])
    x, t, y = inputs()
    out = model(x, t, y)
    assert out.shape == (3, 8, 8, 8) and torch.count_nonzero(out) == 0  # zero final layer: 0 at init
    # adaLN-Zero keeps its promise with every option: each block is exactly the identity at init.
    h = torch.randn(2, 16 + model.context_tokens, 32)
    cond = Conditioning(c=torch.randn(2, 32), tokens=torch.randn(2, 2, 32))
    with torch.no_grad():
        assert torch.equal(model.blocks[0](h, cond), h) == (block == "adaln_zero")
    # After some training every trainable tensor gets a gradient (no option leaves a dead branch).
    randomize_weights(model, std=0.05, only_zero=True)
    model(x, t, y).square().mean().backward()
    dead = [k for k, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert dead == []


def test_defaults_are_the_official_modules_and_options_replace_them():
    base = small_dit("adaln_zero")
    assert {type(m) for m in base.modules()} & {nn.RMSNorm, SwiGLU, RoPE2D} == set()
    assert not any("q_norm.weight" in k or "rope" in k for k in base.state_dict())
    assert base.pos_embed is not None and not base.pos_embed.requires_grad
    modern = small_dit("adaln_zero", **OPTION_SETS["all"])
    assert not any(isinstance(m, nn.LayerNorm) for m in modern.modules())  # blocks, final layer and q/k
    assert isinstance(modern.final_layer.norm_final, nn.RMSNorm)
    assert modern.blocks[0].attn.q_norm.weight.shape == (16,)  # head_dim, shared by the heads
    assert modern.pos_embed is None  # rope2d: no sin-cos table
    assert all(a.rope is modern.rope for a in modern.modules() if isinstance(a, Attention))
    assert not any("rope" in k for k in modern.state_dict())  # tables are recomputed, not checkpointed
    cross = small_dit("cross_attn", block_kwargs={"qk_norm": True})
    assert isinstance(cross.blocks[0].cross_attn.q_norm, nn.LayerNorm)  # qk_norm reaches cross-attention too
    assert cross.blocks[0].cross_attn.q_norm.eps == 1e-5  # PyTorch-default LayerNorm, as LightningDiT


# ------------------------------------------------------------------------------------------------ SwiGLU


@pytest.mark.parametrize("D,H", [(384, 1024), (1152, 3072), (1024, 2730), (1792, 4778), (128, 341)])
def test_swiglu_hidden_size_is_lightningdit_rule_and_keeps_weights_equal(D, H):
    assert swiglu_hidden_size(4 * D) == H == int(2 / 3 * int(D * 4.0))
    with torch.device("meta"):
        gelu = DiT(input_size=8, patch_size=2, hidden_size=D, depth=1, num_heads=D // 64 or 2).blocks[0].mlp
        swiglu = (
            DiT(
                input_size=8,
                patch_size=2,
                hidden_size=D,
                depth=1,
                num_heads=D // 64 or 2,
                block_kwargs={"mlp": "swiglu"},
            )
            .blocks[0]
            .mlp
        )
    weights = lambda m: sum(p.numel() for n, p in m.named_parameters() if n.endswith("weight"))  # noqa: E731
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(gelu) == 8 * D * D + 5 * D and params(swiglu) == 3 * D * H + 2 * H + D
    if D % 3 == 0:  # S, XL: exactly the same weight matrices' size, only the biases differ (2H - 4D)
        assert weights(swiglu) == weights(gelu) and params(swiglu) - params(gelu) == 2 * H - 4 * D
    else:  # L, 1p6B, tiny: within 2D weights of equal
        assert 0 <= weights(gelu) - weights(swiglu) <= 2 * D


def test_swiglu_gates_the_first_half():
    mlp = SwiGLU(4, 3)
    x = torch.randn(2, 4)
    a, b = mlp.w12(x)[:, :3], mlp.w12(x)[:, 3:]
    torch.testing.assert_close(mlp(x), mlp.w3(torch.nn.functional.silu(a) * b))


# ----------------------------------------------------------------------------------------------- QK-norm


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_qk_norm_makes_attention_independent_of_the_query_key_scale(norm):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    outputs = {}
    for qk in (None, norm):
        attn = Attention(32, 2, backend="math", qk_norm=qk)
        with torch.no_grad():
            before = attn(x)
            attn.qkv.weight[:64] *= 7.0  # scale the q and k projections (not v)
            attn.qkv.bias[:64] *= 7.0
            outputs[qk] = (before, attn(x))
    assert not torch.allclose(*outputs[None], atol=1e-3)  # plain attention: sharper softmax
    torch.testing.assert_close(*outputs[norm], atol=2e-4, rtol=1e-3)  # normalised: unchanged


# -------------------------------------------------------------------------------------------------- RoPE


def test_rope_rotates_adjacent_pairs_rows_then_columns():
    rope = RoPE2D(grid_size=3, head_dim=8)
    x = torch.randn(1, 1, 9, 8)
    out = rope(x)
    n, row, col = 5, 1, 2  # token 5 of a 3x3 grid (row-major)
    for j, (pos, omega) in enumerate([(row, 1.0), (row, 0.01), (col, 1.0), (col, 0.01)]):  # 10000^(-2j/4)
        c, s = torch.cos(torch.tensor(pos * omega)), torch.sin(torch.tensor(pos * omega))
        a, b = x[0, 0, n, 2 * j], x[0, 0, n, 2 * j + 1]
        torch.testing.assert_close(out[0, 0, n, 2 * j : 2 * j + 2], torch.stack([a * c - b * s, b * c + a * s]))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation
    torch.testing.assert_close(out[..., 0, :], x[..., 0, :])  # position (0, 0): no rotation


def test_rope_attention_is_equivariant_to_a_shift_of_all_positions():
    torch.manual_seed(0)
    attn = Attention(64, 4, backend="math")
    x = torch.randn(2, 16, 64)
    outs = []
    for offset in [(0, 0), (3, -2), (10.5, 7)]:
        attn.rope = RoPE2D(grid_size=4, head_dim=16, offset=offset)
        with torch.no_grad():
            outs.append(attn(x))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-4)  # only relative positions matter
    torch.testing.assert_close(outs[2], outs[0], atol=1e-5, rtol=1e-4)
    attn.rope = None
    with torch.no_grad():
        assert not torch.allclose(attn(x), outs[0], atol=1e-3)  # and the positions do matter


def test_rope_leaves_in_context_tokens_unrotated():
    rope = RoPE2D(grid_size=2, head_dim=8)
    x = torch.randn(1, 2, 6, 8)
    out = rope(x)
    assert torch.equal(out[..., 4:, :], x[..., 4:, :]) and not torch.equal(out[..., 1:4, :], x[..., 1:4, :])


# ------------------------------------------------------------------------------------------------ Gflops


@pytest.mark.parametrize("options", list(OPTION_SETS))
@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_measured_gflops_equal_the_closed_form_per_variant(block, options):
    with torch.device("meta"):
        model = DiT(
            input_size=32, patch_size=2, hidden_size=1024, depth=2, num_heads=16, block=block, **OPTION_SETS[options]
        )
    assert measured_gflops(model) == pytest.approx(closed_form_gflops(model), rel=1e-12)


def test_swiglu_changes_macs_only_where_3_does_not_divide_d():
    def gflops(size, **kw):
        depth, hidden, heads = {"XL": (28, 1152, 16), "L": (24, 1024, 16)}[size]
        with torch.device("meta"):
            return measured_gflops(
                DiT(input_size=32, patch_size=2, hidden_size=hidden, depth=depth, num_heads=heads, **kw)
            )

    assert gflops("XL", block_kwargs={"mlp": "swiglu"}) == pytest.approx(118.621421568, abs=1e-9)  # = DiT-XL/2
    # DiT-L/2: H = 2730 instead of 8192/3, i.e. 3·256·1024·(2730·3 − 8192)·24 fewer MACs (RoPE/norms: 0 MACs).
    delta = gflops("L") - gflops("L", block_kwargs={"mlp": "swiglu"}, position="rope2d")
    assert delta == pytest.approx(256 * 1024 * (8192 - 3 * 2730) * 24 / 1e9, rel=1e-9)


def test_ditlab_flops_counts_each_variant(capsys):
    from ditlab.tools.flops_cli import run

    cfg = compose(
        "flops",
        [
            "model=L",
            "model.patch_size=2",
            "block.mlp=swiglu",
            "block.position=rope2d",
            "block.norm=rmsnorm",
            "block.qk_norm=true",
            "output=json",
        ],
    )
    (record,) = run(cfg)
    base = run(compose("flops", ["model=L", "model.patch_size=2", "output=json"]))[0]
    assert base["gflops"] == pytest.approx(80.697622528, abs=1e-6)  # DiT-L/2 (paper: 80.71)
    assert base["gflops"] - record["gflops"] == pytest.approx(256 * 1024 * 2 * 24 / 1e9, abs=2e-6)  # SwiGLU's H
    assert record["params"] != base["params"]


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "override,message",
    [
        ("block.norm=batchnorm", "unknown norm 'batchnorm'; set block.norm to one of layernorm, rmsnorm"),
        ("block.mlp=relu", "unknown mlp 'relu'; set block.mlp to one of gelu, swiglu"),
        ("block.position=learned", "unknown position 'learned'; set block.position to one of sincos, rope2d"),
    ],
)
def test_bad_block_options_are_one_line(override, message):
    from ditlab.build import build_model

    cfg = compose("train", [override, "paths.output_dir=unused"])
    with pytest.raises(DitlabError, match=message):
        build_model(cfg.model, cfg.block, in_channels=1, input_size=8, out_channels=2, num_classes=10)


def test_rope_needs_a_head_size_divisible_by_4():
    with pytest.raises(DitlabError, match="2-D RoPE needs a head size divisible by 4, got 6"):
        DiT(input_size=8, patch_size=2, hidden_size=12, depth=1, num_heads=2, position="rope2d")


def test_modern_options_refuse_the_diffusers_export_with_one_line():
    from ditlab.models.diffusers_interop import to_diffusers

    with pytest.raises(DitlabError, match="diffusers' DiTTransformer2DModel has the paper's DiT blocks only"):
        to_diffusers(small_dit("adaln_zero", block_kwargs={"mlp": "swiglu"}))
