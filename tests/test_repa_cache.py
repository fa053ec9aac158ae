"""REPA targets cached with the latents: ``ditlab-extract ... aux=repa`` stores the frozen encoder's features
of each image and flip; ``data=latents aux=repa`` reads them (same loss and gradients as the live encoder,
no encoder run) and refuses, in one line naming the fix, a cache without them or with another encoder's."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from latent_artifacts import LATENT_TRAIN, compose_extract, extract_cfg, make_image_folder, make_tiny_vae
from PIL import Image
from safetensors.torch import load_file

from ditlab.auxloss.repa import REPA
from ditlab.auxloss.targets import FrozenTarget
from ditlab.cache.extract import extract
from ditlab.data.latents import LatentsDataModule
from ditlab.data.transforms import adm_center_crop, to_model_range
from ditlab.encoders.vae import VAEEncoder
from ditlab.errors import DitlabError
from ditlab.models.dit import DiT
from ditlab.training.train import train

ENCODER = "python:test_repa_cache:make_encoder"
REPA_OPTIONS = ["aux=repa", f"aux.encoder={ENCODER}"]


def make_encoder() -> nn.Module:
    """A test-made frozen RGB encoder: (N, 3, 16, 16) -> a (N, 10, 8, 8) map; BatchNorm and dropout would
    show a forward outside eval mode."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Dropout(0.5), nn.Conv2d(6, 10, 2, stride=2)
    )


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    base = tmp_path_factory.mktemp("repa_cache")
    vae = make_tiny_vae(base / "vae")
    root = base / "train"
    make_image_folder(root, per_class=3)  # 13 files, one corrupt: 12 cached images in shards of 5
    return {"base": base, "vae": vae, "root": root}


@pytest.fixture(scope="module")
def cache(assets):
    """A cache extracted without features, then given them by the command the refusal names."""
    cache_dir = assets["base"] / "cache"
    plain = extract(extract_cfg(assets, cache_dir))
    assert plain["complete"] and plain["repa_features"] is None
    before = {p.name: p.stat().st_mtime_ns for p in (cache_dir / "shards").glob("shard-*")}
    latent_dm = LatentsDataModule(str(cache_dir))
    with pytest.raises(DitlabError) as refused:
        latent_dm.cached_features({"encoder": ENCODER, "resolution": None, "preprocess": "none"})
    command = (
        f"ditlab-extract data.root={assets['root']} data.resolution=16 encoder=sd_vae encoder.path={assets['vae']} "
        f"encoder.vae_class=AutoencoderKL cache_dir={cache_dir} dtype=float32 shard_size=5 "
        f"aux=repa aux.encoder={ENCODER} aux.encoder_resolution=null aux.encoder_preprocess=none"
    )
    assert (
        str(refused.value) == f"the latent cache {cache_dir} holds no REPA encoder features; add them with: {command}"
    )
    real_posterior, encoded = VAEEncoder.posterior, []
    VAEEncoder.posterior = lambda self, x: encoded.append(len(x)) or real_posterior(self, x)
    try:  # the named command, as a user would paste it (plus the test's CPU settings)
        manifest = extract(compose_extract(*command.split()[1:]))
    finally:
        VAEEncoder.posterior = real_posterior
    assert encoded == [1]  # the start-up probe only: no latents were encoded again
    assert before == {p.name: p.stat().st_mtime_ns for p in (cache_dir / "shards").glob("shard-*")}  # kept
    return cache_dir, manifest


def source_images(assets):
    listing = sorted((p for p in assets["root"].rglob("*") if p.is_file()), key=lambda p: (p.parent.name, p.name))
    return lambda index: to_model_range(adm_center_crop(Image.open(listing[index]).convert("RGB"), 16))[None]


def test_manifest_names_the_encoder_and_every_shard_has_features_of_both_flips(assets, cache):
    cache_dir, manifest = cache
    spec = manifest["repa_features"]
    assert spec["complete"] and manifest["complete"] and manifest["num_latents"] == 12
    assert (spec["encoder"], spec["resolution"], spec["preprocess"]) == (ENCODER, None, "none")
    assert spec["shape"] == [10, 8, 8] and spec["dtype"] == "float32"
    live, image = FrozenTarget(make_encoder(), lambda m, x: m(x), ENCODER, None, "none", None), source_images(assets)
    for k, s in enumerate(manifest["shards"]):
        latents, features = load_file(cache_dir / s["file"]), load_file(cache_dir / f"shards/repa-{k:05d}.safetensors")
        assert torch.equal(latents["index"], features["index"])  # the same rows in the same order
        for row, index in enumerate(features["index"].tolist()):
            x = image(index)
            torch.testing.assert_close(features["feat"][row], live(x)[0], rtol=0, atol=1e-6)
            torch.testing.assert_close(features["feat_flip"][row], live(x.flip(-1))[0], rtol=0, atol=1e-6)


def test_cached_features_give_the_live_encoders_repa_loss_and_gradients(assets, cache):
    cache_dir, manifest = cache
    dm = LatentsDataModule(str(cache_dir), random_flip=True)
    assert dm.cached_features({"encoder": ENCODER, "resolution": None, "preprocess": "none"}) == [10, 8, 8]
    dm.setup()
    shards = [load_file(cache_dir / s["file"]) for s in manifest["shards"]]
    rows = [(shard, r) for shard in shards for r in range(len(shard["index"]))]
    image = source_images(assets)
    latents, stored, pixels, flips = [], [], [], []
    for i in range(len(dm.dataset)):
        x, _, feat = dm.dataset[i]
        shard, r = rows[i]
        flipped = torch.equal(x[:4], shard["mean_flip"][r])  # the flip this sample's latents come from
        assert flipped or torch.equal(x[:4], shard["mean"][r])
        latents.append(x[:4])
        stored.append(feat)
        pixels.append(image(int(shard["index"][r]))[0].flip(-1) if flipped else image(int(shard["index"][r]))[0])
        flips.append(flipped)
    assert 0 < sum(flips) < len(flips)  # both flips were drawn
    z, stored, pixels = torch.stack(latents), torch.stack(stored), torch.stack(pixels)

    def loss_and_grads(data, targets):
        torch.manual_seed(0)
        model = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3)
        repa = REPA(model, data, encoder=ENCODER, encoder_preprocess="none", depth=1, projector_dim=16)
        repa.projector.load_state_dict(projector)
        torch.manual_seed(2)  # the same label dropout in both runs (a live encoder's factory reseeds)
        with repa.watch(model):
            model(z, torch.arange(len(z)) * 70, torch.arange(len(z)) % 3)
        loss = repa.add_to({"loss": torch.zeros(len(z))}, targets)["repa"]
        loss.mean().backward()
        grads = [p.grad for p in [*model.parameters(), *repa.parameters()] if p.grad is not None]
        return repa, loss.detach(), grads

    torch.manual_seed(0)
    projector = REPA(
        DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3),
        SimpleNamespace(name="imagefolder", channels=3, resolution=16),
        encoder=ENCODER,
        depth=1,
        projector_dim=16,
    ).projector.state_dict()
    pixel_data = SimpleNamespace(name="imagefolder", channels=3, resolution=16)
    live, live_loss, live_grads = loss_and_grads(pixel_data, pixels)
    cached, cached_loss, cached_grads = loss_and_grads(dm, stored)
    assert not live.cached and cached.cached and cached.cost()["encoder_gflops"] == 0.0 < live.cost()["encoder_gflops"]
    # Float tolerance, not bit for bit: the features are float32, but the encoder ran on other batches at
    # extraction (chunks of images and their flips), and CPU convolutions round differently by batch size
    # (one image at a time differs from the stored features in the last bits; this whole batch matched exactly).
    torch.testing.assert_close(cached_loss, live_loss, rtol=1e-5, atol=1e-6)
    assert len(cached_grads) == len(live_grads) > 0
    for a, b in zip(cached_grads, live_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_cache_with_another_encoders_features_is_refused_in_one_line(assets, cache, train_cfg):
    cache_dir, _ = cache
    cfg = train_cfg(
        *LATENT_TRAIN, f"data.cache_dir={cache_dir}", f"encoder.path={assets['vae']}", "aux=repa", "aux.depth=1"
    )
    with pytest.raises(DitlabError) as refused:
        train(cfg)  # aux.encoder defaults to dinov2_vitb14: never loaded, the manifest already disagrees
    message = str(refused.value)
    assert "\n" not in message and message == (
        f"the latent cache {cache_dir} holds REPA features of another encoder (aux.encoder: cache has "
        f'"{ENCODER}", requested "dinov2_vitb14"; aux.encoder_resolution: cache has null, requested 224; '
        'aux.encoder_preprocess: cache has "none", requested "imagenet"); train with aux=repa '
        f"aux.encoder={ENCODER} aux.encoder_resolution=null aux.encoder_preprocess=none, or extract this "
        "encoder's features into a new cache_dir"
    )
    with pytest.raises(DitlabError, match="holds REPA features of another encoder .aux.encoder_preprocess: cache has"):
        extract(extract_cfg(assets, cache_dir, *REPA_OPTIONS, "aux.encoder_preprocess=imagenet"))


def test_a_damaged_feature_file_is_refused_and_extracted_again(assets, cache):
    cache_dir, manifest = cache
    path = cache_dir / "shards/repa-00001.safetensors"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    identity = {"encoder": ENCODER, "resolution": None, "preprocess": "none"}
    with pytest.raises(
        DitlabError, match="has missing or damaged REPA feature files .* finish them with: ditlab-extract"
    ):
        LatentsDataModule(str(cache_dir)).cached_features(identity)
    LatentsDataModule(str(cache_dir))  # the latents alone stay usable
    again = extract(extract_cfg(assets, cache_dir, *REPA_OPTIONS))
    assert again["repa_features"]["complete"] and path.read_bytes() == good


def test_training_from_a_cache_with_features_never_runs_an_encoder(assets, cache, train_cfg, tmp_path, monkeypatch):
    cache_dir, _ = cache

    def never(*args, **kwargs):
        raise AssertionError("an encoder ran during a cached REPA run")

    monkeypatch.setattr(VAEEncoder, "posterior", never)
    monkeypatch.setattr(FrozenTarget, "__call__", never)
    cfg = train_cfg(
        *LATENT_TRAIN,
        f"data.cache_dir={cache_dir}",
        f"encoder.path={assets['vae']}",
        *REPA_OPTIONS,
        "aux.depth=1",
        "aux.projector_dim=8",
    )
    summary = train(cfg)
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    assert summary["aux"]["targets"] == "cached" and summary["aux"]["target_dim"] == 10
    assert summary["aux_encoder_gflops"] == 0.0 and summary["aux_projector_gflops"] > 0
    assert summary["data"]["repa_features"]["encoder"] == ENCODER
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    assert "train/repa" in metrics.splitlines()[0]


def test_pixel_data_keeps_running_the_encoder_live():
    model = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3)
    repa = REPA(model, SimpleNamespace(name="imagefolder", channels=3, resolution=16), encoder=ENCODER, depth=1)
    assert not repa.cached and repa.describe()["targets"] == "live" and repa.cost()["encoder_gflops"] > 0
