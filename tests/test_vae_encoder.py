"""encoder=sd_vae: a diffusers VAE saved by the test and loaded back through from_pretrained."""

import json
import shutil

import pytest
import torch
from conftest import compose_train, run_cli
from diffusers import AutoencoderKL, AutoencoderTiny
from latent_artifacts import make_image_folder, make_tiny_vae

from ditlab.build import build_encoder
from ditlab.encoders.cached import CachedPosteriorEncoder
from ditlab.encoders.vae import VAEEncoder
from ditlab.errors import DitlabError


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return make_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny_vae")


def sd_vae(*overrides):
    return build_encoder(compose_train("encoder=sd_vae", *overrides).encoder)


def images(n=3, side=16, seed=0):
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_sd_vae_loads_with_from_pretrained_and_encodes_like_dit(vae_dir):
    enc = sd_vae(f"encoder.path={vae_dir}")
    assert enc.describe() == {
        "name": "sd_vae",
        "path": str(vae_dir.resolve()),
        "vae_class": "AutoencoderKL",
        "subfolder": None,
        "scaling_factor": 0.18215,
        "shift_factor": 0.0,
        "posterior": "sample",
    }
    assert enc.latent_shape(3, 16) == (4, 8)
    # Frozen: no gradients, eval mode even after Lightning's model.train().
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.vae.training
    # DiT's line: vae.encode(x).latent_dist.sample() * 0.18215, with the same noise.
    reference = AutoencoderKL.from_pretrained(vae_dir).eval()
    x = images()
    with torch.no_grad():
        expected = reference.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(7)) * 0.18215
        decoded = reference.decode(expected / 0.18215).sample
    z = enc.encode(x, generator=torch.Generator().manual_seed(7))
    assert z.shape == (3, 4, 8, 8)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(enc.decode(z), decoded)
    # A fresh sample each call; posterior=mean is deterministic.
    assert not torch.equal(enc.encode(x), enc.encode(x))
    mean_enc = sd_vae(f"encoder.path={vae_dir}", "encoder.posterior=mean")
    torch.testing.assert_close(mean_enc.encode(x), reference.encode(x).latent_dist.mean * 0.18215)


def test_describe_rebuilds_the_same_encoder_for_sampling(vae_dir):
    enc = sd_vae(f"encoder.path={vae_dir}", "encoder.scaling_factor=0.3")
    again = build_encoder(enc.describe())
    assert again.describe() == enc.describe() and again.scaling_factor == 0.3
    x = images()
    torch.testing.assert_close(
        again.encode(x, torch.Generator().manual_seed(1)), enc.encode(x, torch.Generator().manual_seed(1))
    )


def test_scale_and_shift_come_from_the_vae_config_then_the_fallback(vae_dir, tmp_path):
    config = json.loads((vae_dir / "config.json").read_text())
    # Config states them: used as stated.
    stated = tmp_path / "stated"
    shutil.copytree(vae_dir, stated)
    (stated / "config.json").write_text(json.dumps({**config, "scaling_factor": 0.5, "shift_factor": 0.1}))
    enc = sd_vae(f"encoder.path={stated}", "encoder.posterior=mean")
    assert (enc.scaling_factor, enc.shift_factor) == (0.5, 0.1)
    x = images()
    mean, std = enc.posterior(x)
    torch.testing.assert_close(enc.encode(x), (mean - 0.1) * 0.5)
    torch.testing.assert_close(enc.decode(enc.encode(x)), enc.vae.decode(mean).sample)
    # Config silent (as sd-vae-ft-ema's config.json): the YAML's fallback, 0.18215.
    silent = tmp_path / "silent"
    shutil.copytree(vae_dir, silent)
    (silent / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k not in ("scaling_factor", "shift_factor")})
    )
    enc = sd_vae(f"encoder.path={silent}", "encoder.fallback_scaling_factor=0.25")
    assert (enc.scaling_factor, enc.shift_factor) == (0.25, 0.0)
    assert sd_vae(f"encoder.path={silent}").scaling_factor == 0.18215
    # An explicit value overrides both.
    assert sd_vae(f"encoder.path={stated}", "encoder.scaling_factor=0.7", "encoder.shift_factor=0").shift_factor == 0.0
    assert sd_vae(f"encoder.path={stated}", "encoder.scaling_factor=0.7").scaling_factor == 0.7


def test_autoencoder_tiny_works_the_same_way(tmp_path):
    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).save_pretrained(tmp_path / "taesd")
    enc = build_encoder(compose_train("encoder=taesd", f"encoder.path={tmp_path / 'taesd'}").encoder)
    assert enc.vae_class == "AutoencoderTiny" and enc.scaling_factor == 1.0 and enc.latent_shape(3, 16) == (4, 8)
    x = images()
    mean, std = enc.posterior(x)
    assert std is None  # deterministic latents
    torch.testing.assert_close(enc.encode(x), enc.vae.encode(x).latents)
    assert enc.decode(enc.encode(x)).shape == (3, 3, 16, 16)
    # vae_class=auto reads _class_name from config.json.
    assert sd_vae(f"encoder.path={tmp_path / 'taesd'}").vae_class == "AutoencoderTiny"


def test_cached_posteriors_give_the_same_latents_as_encoding_every_step(vae_dir):
    enc = sd_vae(f"encoder.path={vae_dir}")
    x = images()
    mean, std = enc.posterior(x)
    cached = CachedPosteriorEncoder(enc, has_std=True)
    torch.testing.assert_close(
        cached.encode(torch.cat([mean, std], 1), torch.Generator().manual_seed(3)),
        enc.encode(x, torch.Generator().manual_seed(3)),
    )
    assert cached.describe() == enc.describe() and cached.latent_shape(3, 16) == (4, 8)


def test_bad_inputs_name_the_option(vae_dir):
    enc = sd_vae(f"encoder.path={vae_dir}")
    with pytest.raises(DitlabError, match="3-channel images but the data has 1"):
        enc.latent_shape(1, 16)
    with pytest.raises(DitlabError, match="data.resolution=15"):
        enc.latent_shape(3, 15)
    with pytest.raises(DitlabError, match="encoder.posterior"):
        VAEEncoder(path=str(vae_dir), posterior="mode")
    with pytest.raises(DitlabError, match=r"cannot load the VAE '.*nowhere' \(encoder.path\)"):
        VAEEncoder(path=str(vae_dir.parent / "nowhere"))


def test_offline_hub_id_fails_in_one_line_naming_the_id_and_option(tmp_path):
    root = tmp_path / "images"
    make_image_folder(root, per_class=1, corrupt=False)
    res = run_cli(
        "ditlab-train",
        "data=imagefolder",
        f"data.root={root}",
        "encoder=sd_vae",
        "encoder.path=ditlab-tests/no-such-vae",
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 2, res.stderr[-2000:]
    last = [line for line in res.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("ditlab: error: cannot load the VAE 'ditlab-tests/no-such-vae' (encoder.path)")
    assert "set encoder.path to a local directory" in last and "Traceback" not in res.stderr
