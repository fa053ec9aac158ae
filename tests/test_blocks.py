"""The four conditioning designs (paper §3.2, Fig. 5) behind one interface, and a user's own block."""

import json
import re
import textwrap

import pytest
import torch
import torch.nn as nn
from conftest import FAST, compose_train, randomize_weights, run_cli

from ditlab.errors import DitlabError
from ditlab.models.blocks import BLOCKS, Conditioning, DiTBlock
from ditlab.models.dit import DiT
from ditlab.models.layers import modulate
from ditlab.training.train import train

BLOCK_NAMES = ["adaln_zero", "adaln", "cross_attn", "in_context"]


def small_dit(block: str, **kw) -> DiT:
    args = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
    return DiT(**{**args, **kw}, block=block)


def inputs(n: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, 8, 8, generator=g)
    return x, torch.randint(0, 1000, (n,), generator=g), torch.randint(0, 10, (n,), generator=g)


def regression_steps(model: DiT, steps: int, lr: float = 1e-2) -> dict[str, torch.Tensor]:
    """`steps` AdamW steps on a fixed regression target; returns the parameters before training."""
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    x, t, y = inputs(8)
    target = torch.randn(8, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        ((model(x, t, y) - target) ** 2).mean().backward()
        opt.step()
    return before


def changed(model: DiT, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[k])}


@pytest.fixture
def restore_blocks():
    """Blocks registered inside a test are removed afterwards (the registry is global)."""
    saved = dict(BLOCKS._entries)
    yield
    BLOCKS._entries.clear()
    BLOCKS._entries.update(saved)


# ----------------------------------------------------------------------------------------- shapes, init


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_output_shape_and_exact_zero_at_init(block):
    model = small_dit(block).eval()
    x, t, y = inputs()
    out = model(x, t, y)
    assert out.shape == (3, 8, 8, 8)  # (N, 2C, H, W): eps + learned-Σ channels
    assert torch.count_nonzero(out) == 0  # every design: zero-initialised final layer


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_init_identity_and_conditioning_dependence_per_design(block):
    model = small_dit(block)
    h = torch.randn(2, 16 + model.context_tokens, 32)
    cond = Conditioning(c=torch.randn(2, 32), tokens=torch.randn(2, 2, 32))
    other = Conditioning(c=torch.randn(2, 32), tokens=torch.randn(2, 2, 32))
    blk = model.blocks[0]
    with torch.no_grad():
        out, out_other = blk(h, cond), blk(h, other)
    # adaLN-Zero: zero modulation => gates 0 => the block is exactly the identity.
    assert torch.equal(out, h) == (block == "adaln_zero")
    # adaLN / adaLN-Zero ignore c at init (zero modulation); cross-attention reads its 2 tokens from the
    # start; in-context sees the conditioning only as tokens already in the sequence.
    assert torch.equal(out, out_other) == (block != "cross_attn")
    if block == "adaln":  # zero modulation: exactly a plain pre-LN ViT block
        plain = h + blk.attn(modulate(blk.norm1(h), torch.zeros(2, 32), torch.zeros(2, 32)))
        plain = plain + blk.mlp(blk.norm2(plain))
        torch.testing.assert_close(out, plain)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_gradients_reach_every_parameter(block):
    # From the paper's init the gradient reaches the network in stages: the zero final linear layer
    # passes no gradient below itself on step 1, so only it moves; from step 2 the rest moves, except
    # adaLN-Zero's attention/MLP, whose zero gates pass no gradient until the gates moved on step 2.
    model = small_dit(block)
    before = regression_steps(model, steps=1)
    assert changed(model, before) == {"final_layer.linear.weight", "final_layer.linear.bias"}
    before = regression_steps(model, steps=2)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert changed(model, before) | {"final_layer.linear.weight", "final_layer.linear.bias"} == trainable
    assert "pos_embed" not in trainable  # the fixed sin-cos table stays frozen


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_one_step_changes_every_trainable_parameter_once_zero_inits_have_moved(block):
    # A model past its first steps (zero-initialised tensors set to small values): one step moves all.
    model = small_dit(block)
    randomize_weights(model, std=0.02, only_zero=True)
    before = regression_steps(model, steps=1)
    assert changed(model, before) == {k for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_class_label_changes_the_output_after_a_few_steps(block):
    model = small_dit(block)
    regression_steps(model, steps=3)
    model.eval()
    x, t, _ = inputs(2)
    with torch.no_grad():
        a, b = model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([2, 2]))
    assert (a - b).abs().max() > 1e-4


def test_in_context_appends_t_and_y_tokens_and_drops_them_before_the_final_layer():
    model = small_dit("in_context").eval()
    randomize_weights(model.final_layer, std=0.1)
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("block_in", args[0]))
    model.blocks[-1].register_forward_hook(lambda m, args, out: seen.__setitem__("block_out", out))
    model.final_layer.register_forward_pre_hook(lambda m, args: seen.__setitem__("final_in", args[0]))
    x, t, y = inputs(2)
    with torch.no_grad():
        model(x, t, y)
        t_emb, y_emb = model.t_embedder(t), model.y_embedder(y, False)
    assert seen["block_in"].shape == (2, 16 + 2, 32)  # 16 image tokens + [t, y]
    torch.testing.assert_close(seen["block_in"][:, 16], t_emb)
    torch.testing.assert_close(seen["block_in"][:, 17], y_emb)
    assert seen["final_in"].shape == (2, 16, 32)
    torch.testing.assert_close(seen["final_in"], seen["block_out"][:, :16])


def test_cross_attention_adds_about_15_percent_gflops_at_xl2():
    # Paper §3.2: cross-attention is the most expensive design (~15% over adaLN-Zero); in-context and
    # adaLN are within 1%. Counted on the meta device (no memory).
    from ditlab.tools.flops import measured_gflops

    gflops = {}
    for block in BLOCK_NAMES:
        with torch.device("meta"):
            model = DiT(input_size=32, patch_size=2, hidden_size=1152, depth=28, num_heads=16, block=block)
        gflops[block] = measured_gflops(model)
    assert gflops["cross_attn"] / gflops["adaln_zero"] == pytest.approx(1.16, abs=0.01)
    assert gflops["adaln"] < gflops["adaln_zero"] < gflops["in_context"] < gflops["cross_attn"]


# -------------------------------------------------------------------------------------- training runs


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_each_block_trains_the_default_experiment(train_cfg, block):
    summary = train(train_cfg(f"block={block}"))
    assert summary["block"] == block and summary["steps"] == 4
    assert summary["final_loss"] == pytest.approx(summary["final_loss"])  # finite, not NaN
    assert summary["gflops"] == pytest.approx(summary["gflops_closed_form"], rel=1e-9)
    assert re.fullmatch(rf"digits_DiT-tiny-4_{block}_ddpm_seed0_[0-9a-f]{{8}}", summary["run_name"])  # + options hash


class ScaledResidualBlock(DiTBlock):
    """A user's design: a plain pre-LN ViT block whose residual branches are scaled by a learned,
    class/time-conditioned scalar initialised to ``gate_init``."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, attn_backend="sdpa", gate_init=0.0):
        super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend)
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.gate = nn.Linear(hidden_size, 2)
        self.gate_init = gate_init

    def initialize(self):
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, self.gate_init)

    def forward(self, x, cond):
        g_attn, g_mlp = self.gate(cond.c).unsqueeze(1).unbind(-1)  # (N, 1) each
        x = x + g_attn.unsqueeze(-1) * self.attn(self.norm1(x))
        return x + g_mlp.unsqueeze(-1) * self.mlp(self.norm2(x))


def test_a_block_registered_in_a_test_trains_without_editing_ditlab(tmp_path, restore_blocks):
    BLOCKS.register("test_scaled_residual")(ScaledResidualBlock)
    conf = tmp_path / "my_conf" / "block"
    conf.mkdir(parents=True)
    (conf / "scaled_residual.yaml").write_text("name: test_scaled_residual\ngate_init: 0.5\n")
    cfg = compose_train(
        f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "block=scaled_residual", output_dir=tmp_path / "run"
    )
    summary = train(cfg)
    assert summary["block"] == "test_scaled_residual" and summary["steps"] == 4
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    bias = ckpt["state_dict"]["model.blocks.0.gate.bias"]  # the YAML key reached the constructor
    assert bias.shape == (2,) and not torch.equal(bias, torch.full((2,), 0.5))  # and it trained


def test_a_plugin_block_module_trains_from_the_cli(tmp_path):
    # What a user does: one Python file + one YAML file in their own folders, nothing edited in ditlab.
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_blocks.py").write_text(
        textwrap.dedent("""
        import torch.nn as nn
        from ditlab.models.blocks import BLOCKS, AdaLNZeroBlock

        @BLOCKS.register("adaln_zero_dropout")
        class AdaLNZeroDropout(AdaLNZeroBlock):
            def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, attn_backend="sdpa", p=0.1):
                super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend)
                self.drop = nn.Dropout(p)

            def forward(self, x, cond):
                return self.drop(super().forward(x, cond))
    """)
    )
    (tmp_path / "conf" / "block").mkdir(parents=True)
    (tmp_path / "conf" / "block" / "my_block.yaml").write_text("name: adaln_zero_dropout\nmodule: my_blocks\np: 0.2\n")
    res = run_cli(
        "ditlab-train",
        *FAST,
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "block=my_block",
        "run_name=plugin",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "plugins")},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "plugin" / "summary.json").read_text())
    assert summary["block"] == "adaln_zero_dropout" and summary["steps"] == 4
    # ditlab-flops counts it too, over the paper grid (dropout costs no MACs: adaLN-Zero's counts).
    res = run_cli(
        "ditlab-flops",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "block=my_block",
        "output=json",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "plugins")},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    records = json.loads(res.stdout)
    assert len(records) == 12 and {r["block"] for r in records} == {"adaln_zero_dropout+p=0.2"}  # its options label it
    assert records[-1]["name"] == "DiT-XL/2" and records[-1]["gflops"] == pytest.approx(118.621421568, abs=1e-6)


# ------------------------------------------------------------------------------------------ bad input


def test_unknown_block_lists_the_registered_ones():
    with pytest.raises(
        DitlabError, match="unknown block 'nope'; registered: adaln, adaln_zero, cross_attn, in_context"
    ):
        small_dit("nope")


def test_unimportable_block_module_names_the_option():
    with pytest.raises(DitlabError, match="cannot import plugin module 'no_such_mod' \\(set by block.module\\)"):
        DiT(input_size=8, patch_size=2, hidden_size=32, depth=1, num_heads=4, block="x", block_module="no_such_mod")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(hidden_size=30, num_heads=4), "model.hidden_size=30 is not divisible by model.num_heads=4"),
        (dict(patch_size=3), "patch size 3 does not divide the model input size 8; set model.patch_size"),
        (dict(patch_size=16), "patch size 16 does not divide"),
    ],
)
def test_bad_model_shapes_fail_with_one_line(kwargs, message):
    with pytest.raises(DitlabError, match=message):
        small_dit("adaln_zero", **kwargs)
