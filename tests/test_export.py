"""ditlab-export writes a DiTPipeline folder that samples what ditlab-sample samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_train
from latent_artifacts import make_image_folder, make_tiny_vae
from test_diffusers_interop import trained_looking_dit

from ditlab.build import build_objective, build_sampler
from ditlab.cli import compose
from ditlab.encoders.vae import VAEEncoder
from ditlab.errors import DitlabError
from ditlab.images import to_uint8
from ditlab.models.diffusers_interop import to_diffusers
from ditlab.samplers.diffusers_sampler import DiffusersSampler
from ditlab.samplers.generate import generate
from ditlab.tools.export import _check_pipeline_runs_it_alike, export
from ditlab.tools.sample import sample
from ditlab.training.train import train


def test_exported_pipeline_samples_what_ditlab_sample_samples(train_cfg, tmp_path, monkeypatch):
    from diffusers import DiTPipeline

    vae = make_tiny_vae(tmp_path / "vae")
    make_image_folder(tmp_path / "images", per_class=3, corrupt=False)
    train(
        train_cfg(
            "data=imagefolder",
            f"data.root={tmp_path / 'images'}",
            "data.resolution=16",
            "data.num_workers=0",
            "data.batch_size=4",
            "encoder=sd_vae",
            f"encoder.path={vae}",
            "final_samples.num_samples=3",
            "final_samples.batch_size=3",
            "progress=false",
        )
    )
    run = tmp_path / "run"
    recipe = ["sampler=dpm_solver", "sampler.steps=5", "seed=3"]
    decoded = record_decodes(monkeypatch)
    sample(
        compose(
            "sample",
            [
                f"ckpt={run}",
                *recipe,
                "guidance.scale=1",
                "num_samples=6",
                "batch_size=6",
                f"out={tmp_path / 'ours'}",
                "progress=false",
            ],
        )
    )
    record = export(compose("export", [f"ckpt={run}", f"out={tmp_path / 'pipe'}", *recipe[:2]]))
    assert record["num_inference_steps"] == 5 and record["sampler"]["sampler"] == "dpm_solver"
    config = json.loads((tmp_path / "pipe" / "transformer" / "config.json").read_text())
    assert config["timestep_downscale_freq_shift"] == 0  # the frequency fix travels with the folder

    assert record["usage"].startswith("import ditlab.models.diffusers_transformer")
    with np.load(tmp_path / "ours" / "samples.npz") as f:
        ours, labels = f["arr_0"], f["arr_1"]
    pipe = DiTPipeline.from_pretrained(tmp_path / "pipe")
    blocks = pipe.transformer.transformer_blocks
    assert all(b.norm1.emb.time_proj.downscale_freq_shift == 0 for b in blocks)
    assert all(type(b.attn1.processor).__name__ == "FusedAttnProcessor2_0" for b in blocks)  # DiT's one qkv matmul
    kw = dict(guidance_scale=1, num_inference_steps=5, output_type="pt")
    floats = pipe(class_labels=labels.tolist(), generator=torch.Generator().manual_seed(3), **kw).images
    theirs = pipeline_uint8(pipe, labels, 5, guidance_scale=1, generator=torch.Generator().manual_seed(3))
    assert theirs.shape == ours.shape == (6, 16, 16, 3)
    # Same noise, transformer ops (fused q/k/v), scheduler and VAE decode expression: bit-identical
    # floats (the pipeline's [0, 1] images are (x / 2 + 0.5).clamp(0, 1) of its decoded x) ...
    (x,) = decoded
    assert torch.equal(floats, (x / 2 + 0.5).clamp(0, 1))
    np.testing.assert_array_equal(ours, to_uint8(x))  # ditlab's bytes: DiT's rule
    np.testing.assert_array_equal(theirs, pil_uint8(pipe, floats))  # the pipeline's: round(255 u)
    # ... so the bytes differ only where the two rules round one float apart: off by one, at a value
    # within float error of a rounding boundary (k + 0.5 on the 0..255 scale).
    apart = theirs != ours
    scaled = 255 * floats.permute(0, 2, 3, 1).double().numpy()
    assert np.all(np.abs(theirs.astype(int) - ours.astype(int))[apart] == 1)
    assert np.all(np.abs(scaled[apart] % 1 - 0.5) < 1e-4), scaled[apart]
    assert apart.mean() < 1e-3 and ours.std() > 5  # not a blank image that would match anything

    with pytest.raises(DitlabError, match="already exists"):
        export(compose("export", [f"ckpt={run}", f"out={tmp_path / 'pipe'}"]))
    with pytest.raises(DitlabError, match="sampler=ddim is ditlab's own code"):
        export(compose("export", [f"ckpt={run}", f"out={tmp_path / 'p2'}", "sampler=ddim"]))


def record_decodes(monkeypatch) -> list[torch.Tensor]:
    """Every ``VAEEncoder.decode`` output from now on: ditlab's images in [-1, 1], before uint8."""
    decoded, decode = [], VAEEncoder.decode
    monkeypatch.setattr(VAEEncoder, "decode", lambda self, z: decoded.append(decode(self, z)) or decoded[-1])
    return decoded


def pipeline_uint8(pipe, labels, steps: int, **kw) -> np.ndarray:
    """The pipeline's own PIL images as (N, H, W, 3) uint8: what a diffusers user gets."""
    images = pipe(class_labels=[int(y) for y in labels], num_inference_steps=steps, output_type="pil", **kw).images
    return np.stack([np.asarray(im) for im in images])


def pil_uint8(pipe, images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) pipeline images in [0, 1] -> uint8 the way its output_type='pil' does it."""
    return np.stack([np.asarray(im) for im in pipe.numpy_to_pil(images.permute(0, 2, 3, 1).float().numpy())])


def test_guided_sampling_in_batches_matches_bit_for_bit(tmp_path, monkeypatch):
    """CFG (DiTPipeline: null label 1000, all channels guided) and several batches drawn from one
    generator, through generate() -- the loop ditlab-sample runs -- on a 1000-class model."""
    from diffusers import DiTPipeline

    model = trained_looking_dit(num_classes=1000)  # no training needed: every weight random, none zero
    encoder = VAEEncoder(str(make_tiny_vae(tmp_path / "vae")), scaling_factor=0.7)
    objective = build_objective(compose_train().objective)
    sampler = build_sampler(compose("sample", ["sampler=dpm_solver", "sampler.steps=4"]).sampler)
    labels = torch.tensor([1, 999, 7, 7, 0, 500])
    guidance = {"scale": 4.0, "channels": "all"}
    decoded = record_decodes(monkeypatch)
    ours = np.concatenate(
        [im for im, _, _ in generate(model, objective, sampler, encoder, labels, (4, 8), guidance, 3, 11, 1000)]
    )
    encoder.vae.register_to_config(scaling_factor=encoder.scaling_factor)  # as ditlab-export writes it
    pipe = DiTPipeline(transformer=to_diffusers(model), vae=encoder.vae, scheduler=sampler.build(objective))
    generator = torch.Generator().manual_seed(11)  # one pipeline call per ditlab batch, one generator
    kw = dict(guidance_scale=4.0, num_inference_steps=4, generator=generator, output_type="pt")
    theirs = torch.cat([pipe(class_labels=labels[i : i + 3].tolist(), **kw).images for i in (0, 3)])
    # Bit-identical floats (the pipeline's [0, 1] images are (x / 2 + 0.5).clamp(0, 1) of its decoded x) ...
    assert torch.equal(theirs, (torch.cat(decoded) / 2 + 0.5).clamp(0, 1))
    # ... so identical bytes, except where the two byte rules round apart (none here).
    np.testing.assert_array_equal(pil_uint8(pipe, theirs), ours)
    assert ours.std() > 5


def test_schedulers_the_pipeline_runs_differently_are_refused():
    assert pipeline_refusal("DPMSolverMultistepScheduler", {}) is None
    assert pipeline_refusal("UniPCMultistepScheduler", {}) is None
    assert "init_noise_sigma=1" in pipeline_refusal("EulerDiscreteScheduler", {})
    assert "draw noise" in pipeline_refusal("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"})
    assert "draw noise" in pipeline_refusal("DDPMScheduler", {})


def pipeline_refusal(scheduler: str, options: dict) -> str | None:
    sampler = DiffusersSampler(steps=5, scheduler=scheduler, options=options)
    try:
        _check_pipeline_runs_it_alike(sampler.build(build_objective(compose_train().objective)))
    except DitlabError as e:
        return str(e)
    return None


def test_pixel_space_runs_are_refused_in_one_line(train_cfg, tmp_path):
    train(train_cfg("progress=false"))
    with pytest.raises(DitlabError, match=r"pixel space \(encoder=identity\); DiTPipeline decodes latents"):
        export(compose("export", [f"ckpt={tmp_path / 'run'}", f"out={tmp_path / 'pipe'}"]))
    assert not (tmp_path / "pipe").exists()
