"""ditlab adaLN-Zero <-> diffusers DiTTransformer2DModel with equal outputs (official key mapping;
diffusers' timestep frequencies patched to DiT's)."""

import pytest
import torch
from conftest import randomize_weights

from ditlab.errors import DitlabError
from ditlab.models.diffusers_interop import from_diffusers, to_diffusers, use_official_timestep_frequencies
from ditlab.models.dit import DiT


def trained_looking_dit(**kw) -> DiT:
    """A small DiT whose every weight is non-trivial (no zero-init left), so a wrong mapping shows."""
    args = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
    torch.manual_seed(0)
    model = DiT(**{**args, **kw})
    randomize_weights(model, std=0.3)
    return model.eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 4, 8, 8, generator=g), torch.tensor([0, 417, 999]), torch.tensor([3, 10, 7])


def test_export_gives_the_same_outputs_and_round_trips_exactly():
    model = trained_looking_dit()
    x, t, y = inputs()  # y = 10 is the null class
    transformer = to_diffusers(model)
    with torch.no_grad():
        ours = model(x, t, y)
        theirs = transformer(x, timestep=t, class_labels=y).sample
    assert theirs.shape == ours.shape == (3, 8, 8, 8)  # learned-Σ channels kept: out_channels set explicitly
    assert torch.equal(theirs, ours)  # the same operations in the same order (q/k/v fused as in DiT)
    back = from_diffusers(transformer)
    assert list(back.state_dict()) == list(model.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())


def test_outputs_are_bit_identical_in_float64_too_and_after_save_and_load(tmp_path):
    # float64 on CPU sums a 3D-wide q/k/v matrix multiply differently from three D-wide ones (max |Δ|
    # ~1e-12 with diffusers' split projections), so this fails unless the export fuses q/k/v like DiT.
    from ditlab.models.diffusers_transformer import DitlabDiTTransformer2DModel

    model = trained_looking_dit()
    to_diffusers(model).save_pretrained(tmp_path / "transformer")
    transformer = DitlabDiTTransformer2DModel.from_pretrained(tmp_path / "transformer")
    assert transformer.config.fused_qkv and transformer.config.timestep_downscale_freq_shift == 0
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(transformer(x, timestep=t, class_labels=y).sample, model(x, t, y))
        model, transformer = model.double(), transformer.double()
        assert torch.equal(transformer(x.double(), timestep=t, class_labels=y).sample, model(x.double(), t, y))


def test_diffusers_stock_timestep_frequencies_would_change_the_outputs():
    # Why to_diffusers sets downscale_freq_shift=0: with diffusers' default 1 the same weights disagree.
    model = trained_looking_dit()
    transformer = to_diffusers(model)
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 1
    x, t, y = inputs()
    with torch.no_grad():
        stock = transformer(x, timestep=t, class_labels=y).sample
        use_official_timestep_frequencies(transformer)
        fixed = transformer(x, timestep=t, class_labels=y).sample
        ours = model(x, t, y)
    assert (stock - ours).abs().max() > 1e-2
    torch.testing.assert_close(fixed, ours, rtol=1e-5, atol=1e-5)


def test_save_pretrained_round_trip_needs_the_frequency_fix_again(tmp_path):
    model = trained_looking_dit()
    to_diffusers(model).save_pretrained(tmp_path / "transformer")
    from diffusers import DiTTransformer2DModel

    reloaded = DiTTransformer2DModel.from_pretrained(tmp_path / "transformer")
    use_official_timestep_frequencies(reloaded)
    x, t, y = inputs()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x, timestep=t, class_labels=y).sample, model(x, t, y), rtol=1e-5, atol=1e-5)


def test_model_without_label_dropout_gets_an_unused_null_row():
    model = trained_looking_dit(class_dropout_prob=0.0)
    assert model.y_embedder.embedding_table.num_embeddings == 10
    transformer = to_diffusers(model)
    x, t, _ = inputs()
    y = torch.tensor([0, 5, 9])
    with torch.no_grad():
        torch.testing.assert_close(
            transformer(x, timestep=t, class_labels=y).sample, model(x, t, y), rtol=1e-5, atol=1e-5
        )


def test_exported_model_runs_in_dit_pipeline():
    from diffusers import DDIMScheduler, DiTPipeline
    from latent_artifacts import tiny_vae

    vae = tiny_vae(sample_size=16)
    # DiTPipeline's CFG hard-codes the null label 1000 (ImageNet): export a 1000-class model.
    transformer = to_diffusers(trained_looking_dit(num_classes=1000))
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
    images = pipe(
        class_labels=[1, 2],
        num_inference_steps=2,
        guidance_scale=1.5,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert images.shape == (2, 16, 16, 3)


def test_other_blocks_and_diverged_embedders_are_refused():
    with pytest.raises(DitlabError, match="only adaLN-Zero models export.*block 'cross_attn'"):
        to_diffusers(trained_looking_dit(block="cross_attn"))
    with pytest.raises(DitlabError, match="MLP ratio 4; this model has 2"):
        to_diffusers(trained_looking_dit(mlp_ratio=2.0))
    transformer = to_diffusers(trained_looking_dit())
    with torch.no_grad():
        transformer.transformer_blocks[1].norm1.emb.class_embedder.embedding_table.weight.add_(1.0)
    with pytest.raises(DitlabError, match="block 1's embedder 'class_embedder.embedding_table.weight' differs"):
        from_diffusers(transformer)
