"""ditlab-export writes a DiTPipeline folder that samples what ditlab-sample samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from latent_artifacts import make_image_folder, make_tiny_vae

from ditlab.cli import compose
from ditlab.errors import DitlabError
from ditlab.tools.export import export
from ditlab.tools.sample import sample
from ditlab.training.train import train


def test_exported_pipeline_samples_what_ditlab_sample_samples(train_cfg, tmp_path):
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

    with np.load(tmp_path / "ours" / "samples.npz") as f:
        ours, labels = f["arr_0"], f["arr_1"]
    pipe = DiTPipeline.from_pretrained(tmp_path / "pipe")
    assert all(b.norm1.emb.time_proj.downscale_freq_shift == 0 for b in pipe.transformer.transformer_blocks)
    images = pipe(
        class_labels=labels.tolist(),
        guidance_scale=1,
        num_inference_steps=5,
        output_type="pt",
        generator=torch.Generator().manual_seed(3),
    ).images  # (N, 3, H, W) in [0, 1]
    x = (images * 2 - 1).permute(0, 2, 3, 1).numpy()  # back to [-1, 1], NHWC
    theirs = np.clip(127.5 * x + 128, 0, 255).astype(np.uint8)  # ditlab's (DiT's) uint8 rule: clamp, truncate
    assert theirs.shape == ours.shape == (6, 16, 16, 3)
    # Same weights, noise, scheduler and steps; the two transformers differ only in float32 op order.
    diff = np.abs(theirs.astype(int) - ours.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (diff.max(), (diff == 0).mean())
    assert ours.std() > 5  # not a blank image that would match anything

    with pytest.raises(DitlabError, match="already exists"):
        export(compose("export", [f"ckpt={run}", f"out={tmp_path / 'pipe'}"]))
    with pytest.raises(DitlabError, match="sampler=ddim is ditlab's own code"):
        export(compose("export", [f"ckpt={run}", f"out={tmp_path / 'p2'}", "sampler=ddim"]))


def test_pixel_space_runs_are_refused_in_one_line(train_cfg, tmp_path):
    train(train_cfg("progress=false"))
    with pytest.raises(DitlabError, match=r"pixel space \(encoder=identity\); DiTPipeline decodes latents"):
        export(compose("export", [f"ckpt={tmp_path / 'run'}", f"out={tmp_path / 'pipe'}"]))
    assert not (tmp_path / "pipe").exists()
