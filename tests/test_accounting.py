"""Model accounting: the block hook the closed-form Gflops count uses, and the one run description."""

import pytest
import torch.nn as nn
from conftest import compose_train

from ditlab.models.accounting import block_macs, closed_form_gflops, describe_model, measured_gflops
from ditlab.models.blocks import BLOCKS, AdaLNZeroBlock, DiTBlock
from ditlab.models.dit import DiT

KW = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10)


class GatedBlock(DiTBlock):
    """A user's design that declares its count: pre-LN ViT block with a conditioned scalar gate."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, attn_backend="sdpa"):
        super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend)
        self.norm = nn.LayerNorm(hidden_size)
        self.gate = nn.Linear(hidden_size, 1)

    def forward(self, x, cond):
        g = self.gate(cond.c).unsqueeze(1)
        x = x + g * self.attn(self.norm(x))
        return x + g * self.mlp(self.norm(x))

    def macs(self, seq_len):
        return self.attn_mlp_macs(seq_len) + self.gate.in_features * self.gate.out_features


class UncountedBlock(GatedBlock):
    """Changes ``forward`` (one more attention pass) but inherits the parent's count."""

    def forward(self, x, cond):
        return super().forward(x + self.attn(x), cond)


@pytest.fixture
def user_blocks(restore_blocks):
    BLOCKS.register("test_gated")(GatedBlock)
    BLOCKS.register("test_uncounted")(UncountedBlock)


@pytest.fixture
def restore_blocks():
    saved = dict(BLOCKS._entries)
    yield
    BLOCKS._entries.clear()
    BLOCKS._entries.update(saved)


def test_a_user_block_that_declares_macs_gets_the_exact_closed_form(user_blocks):
    model = DiT(**KW, block="test_gated")
    assert closed_form_gflops(model) == pytest.approx(measured_gflops(model), rel=1e-12)


def test_an_inherited_count_is_not_trusted_for_a_changed_forward(user_blocks):
    model = DiT(**KW, block="test_uncounted")
    assert block_macs(model.blocks[0], model.num_tokens) is None and closed_form_gflops(model) is None
    # ... and the count it would have inherited is indeed wrong (one attention pass short):
    assert GatedBlock.macs(model.blocks[0], model.num_tokens) * 2 / 1e9 < measured_gflops(model)


def test_builtin_blocks_declare_their_count():
    for name in BLOCKS.names():
        assert block_macs(BLOCKS.get(name)(32, 2), 16) is not None, name
    assert block_macs(AdaLNZeroBlock(32, 2), 16) > block_macs(BLOCKS.get("in_context")(32, 2), 16)


def test_run_description_states_when_only_the_measured_count_applies(user_blocks):
    cfg = compose_train("model.patch_size=2")
    cfg.block.name = "test_uncounted"
    model = DiT(**KW, block="test_uncounted")
    described = describe_model(cfg.model, cfg.block, model)
    assert "gflops_closed_form" not in described
    assert described["gflops_note"] == (
        "block 'test_uncounted' (UncountedBlock) declares no closed-form count (DiTBlock.macs); "
        "gflops is the measured count only"
    )
    assert described["gflops"] == pytest.approx(measured_gflops(model), abs=1e-6)


def test_run_description_without_a_model_is_the_config_part():
    cfg = compose_train("model=XL", "model.patch_size=2", "block=cross_attn")
    assert describe_model(cfg.model, cfg.block) == {"model": "DiT-XL/2", "block": "cross_attn", "patch_size": 2}


def test_training_a_block_without_a_count_says_so_in_the_summary(train_cfg, tmp_path, user_blocks):
    import json

    from ditlab.training.train import train

    cfg = train_cfg()
    cfg.block.name = "test_uncounted"
    summary = train(cfg)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["gflops_note"].startswith("block 'test_uncounted' (UncountedBlock) declares no closed-form count")
    assert on_disk["gflops"] == summary["gflops"] > 0 and "gflops_closed_form" not in on_disk
