"""ditlab-extract -> data=latents: manifest, both flips, train from the cache, decode through the VAE,
mismatch refusal, resume after an interruption, two processes writing disjoint shards."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run_cli
from latent_artifacts import LATENT_TRAIN, compose_extract, extract_cfg, make_image_folder, make_tiny_vae
from PIL import Image
from safetensors.torch import load_file

from ditlab.cache import extract as extract_module
from ditlab.cache.extract import extract
from ditlab.data.transforms import adm_center_crop, to_model_range
from ditlab.encoders.vae import VAEEncoder
from ditlab.errors import DitlabError
from ditlab.training.train import train


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    base = tmp_path_factory.mktemp("latent_cache")
    vae = make_tiny_vae(base / "vae")
    root = base / "train"
    special = make_image_folder(root, per_class=4)  # 16 files, one corrupt
    return {"base": base, "vae": vae, "root": root, "special": special}


@pytest.fixture(scope="module")
def cache(assets):
    cache_dir = assets["base"] / "cache"
    manifest = extract(extract_cfg(assets, cache_dir))
    return cache_dir, manifest


def read_shards(cache_dir, manifest):
    return [load_file(cache_dir / s["file"]) for s in manifest["shards"]]


def test_manifest_describes_the_cache_and_shards_hold_both_flips(assets, cache):
    cache_dir, manifest = cache
    assert manifest == json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_latents"] == 15 and manifest["skipped_corrupt"] == 1
    assert manifest["source"]["root"] == str(assets["root"]) and manifest["source"]["num_images"] == 16
    assert manifest["resolution"] == 16 and manifest["latent_shape"] == [4, 8, 8] and manifest["dtype"] == "float32"
    assert manifest["encoder"]["path"] == str(assets["vae"]) and manifest["scaling_factor"] == 0.18215
    assert [(s["first_index"], s["end_index"]) for s in manifest["shards"]] == [(0, 5), (5, 10), (10, 15), (15, 16)]
    assert sum(s["skipped"] == [str(assets["special"]["corrupt"])] for s in manifest["shards"]) == 1
    assert set(manifest["fields"]) == {"mean", "std", "mean_flip", "std_flip", "label", "index"}
    # Every stored posterior is the encoder's, of the ADM-cropped image and of its mirror image.
    encoder = VAEEncoder(path=str(assets["vae"]))
    listing = sorted(p for p in assets["root"].rglob("*") if p.is_file())
    listing = sorted(listing, key=lambda p: (p.parent.name, p.name))
    seen = []
    for shard in read_shards(cache_dir, manifest):
        for row, index in enumerate(shard["index"].tolist()):
            seen.append(index)
            path = listing[index]
            x = to_model_range(adm_center_crop(Image.open(path).convert("RGB"), 16))[None]
            for suffix, image in (("", x), ("_flip", x.flip(-1))):
                mean, std = encoder.posterior(image)
                torch.testing.assert_close(shard["mean" + suffix][row], mean[0], atol=2e-5, rtol=1e-4)
                torch.testing.assert_close(shard["std" + suffix][row], std[0], atol=2e-5, rtol=1e-4)
            assert shard["label"][row] == ["ant", "bee", "cat"].index(path.parent.name)
    assert seen == [i for i, p in enumerate(listing) if p != assets["special"]["corrupt"]]


def test_train_from_the_cache_never_encodes_and_samples_decode_through_the_vae(
    assets, cache, train_cfg, tmp_path, monkeypatch
):
    cache_dir, _ = cache
    decoded = []

    def no_encoding(self, x):
        raise AssertionError("the VAE encoder ran during a cached training run")

    real_decode = VAEEncoder.decode
    monkeypatch.setattr(VAEEncoder, "posterior", no_encoding)
    monkeypatch.setattr(VAEEncoder, "decode", lambda self, z: decoded.append(z.shape) or real_decode(self, z))
    summary = train(train_cfg(*LATENT_TRAIN, f"data.cache_dir={cache_dir}", f"encoder.path={assets['vae']}"))
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    assert summary["encoder"]["name"] == "sd_vae" and summary["encoder"]["path"] == str(assets["vae"])
    assert summary["data"]["num_latents"] == 15 and summary["tokens"] == 4  # 8x8 latents, patch 4
    assert decoded == [(6, 4, 8, 8)]  # the end-of-training samples went through the VAE decoder
    run = tmp_path / "run"
    with np.load(run / "samples.npz") as f:
        assert f["arr_0"].shape == (6, 16, 16, 3) and f["arr_0"].dtype == np.uint8
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["ditlab"]["encoder"] == summary["encoder"]  # scaling factor and VAE identity travel with the weights
    assert not any(k.startswith("encoder") for k in ckpt["state_dict"])
    # ditlab-sample rebuilds the VAE from the checkpoint and decodes through it.
    monkeypatch.undo()
    res = run_cli(
        "ditlab-sample",
        f"ckpt={run}",
        "num_samples=3",
        "batch_size=3",
        "sampler=ddpm",
        "sampler.steps=2",
        f"out={tmp_path / 'sampled'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with np.load(tmp_path / "sampled" / "samples.npz") as f:
        assert f["arr_0"].shape == (3, 16, 16, 3)


def test_training_refuses_a_cache_that_does_not_match(assets, cache, train_cfg, tmp_path):
    cache_dir, _ = cache
    other_vae = make_tiny_vae(tmp_path / "other_vae", seed=1)
    base = [*LATENT_TRAIN, f"data.cache_dir={cache_dir}"]
    with pytest.raises(DitlabError, match=f'encoder.path: cache has "{assets["vae"]}", requested "{other_vae}"'):
        train(train_cfg(*base, f"encoder.path={other_vae}"))
    with pytest.raises(DitlabError, match='encoder.name: cache has "sd_vae", requested "identity"'):
        train(train_cfg(*base, "encoder=identity"))
    with pytest.raises(DitlabError, match="data.resolution=32 but the cache .* holds 16px images"):
        train(train_cfg(*base, f"encoder.path={assets['vae']}", "data.resolution=32"))
    with pytest.raises(DitlabError, match="holds no manifest.json; create the cache first with ditlab-extract"):
        train(train_cfg(*LATENT_TRAIN, f"data.cache_dir={tmp_path}", f"encoder.path={assets['vae']}"))
    # Extracting into the same directory with other settings is refused too, naming the difference.
    with pytest.raises(DitlabError, match="holds a different cache .*resolution: cache has 16, requested 32"):
        extract(extract_cfg(assets, cache_dir, "data.resolution=32"))


def test_a_corrupt_image_stops_extraction_by_default(assets, tmp_path):
    cfg = compose_extract(f"data.root={assets['root']}", f"encoder.path={assets['vae']}", f"cache_dir={tmp_path / 'c'}")
    with pytest.raises(DitlabError, match=f"cannot read image {assets['special']['corrupt']}"):
        extract(cfg)


def test_an_interrupted_extraction_resumes_and_keeps_finished_shards(assets, cache, train_cfg, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    real_write, calls = extract_module.write_shard, []

    def crash_on_second_shard(path, tensors, meta):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(path, tensors, meta)

    monkeypatch.setattr(extract_module, "write_shard", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        extract(extract_cfg(assets, cache_dir))
    monkeypatch.undo()
    first = cache_dir / "shards" / "shard-00000.safetensors"
    assert first.is_file() and not (cache_dir / "shards" / "shard-00001.safetensors").exists()
    assert not json.loads((cache_dir / "manifest.json").read_text())["complete"]
    with pytest.raises(DitlabError, match="is incomplete .* rerun the same ditlab-extract command"):
        train(train_cfg(*LATENT_TRAIN, f"data.cache_dir={cache_dir}", f"encoder.path={assets['vae']}"))
    stale = cache_dir / "shards" / "shard-00001.safetensors.tmp-999"
    stale.write_bytes(b"half a shard")
    mtime = first.stat().st_mtime_ns

    manifest = extract(extract_cfg(assets, cache_dir))
    assert manifest["complete"] and first.stat().st_mtime_ns == mtime and not stale.exists()
    reference_dir, reference = cache
    for got, want in zip(read_shards(cache_dir, manifest), read_shards(reference_dir, reference)):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    # A directory that holds something else is never written into.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DitlabError, match="is not empty and holds no manifest.json"):
        extract(extract_cfg(assets, tmp_path / "busy"))


@pytest.mark.parametrize("damage", ["truncated", "garbage_header"])
def test_a_damaged_shard_is_refused_in_one_line_and_extracted_again(assets, cache, train_cfg, tmp_path, damage):
    import shutil

    cache_dir = tmp_path / "cache"
    shutil.copytree(cache[0], cache_dir)
    shard = cache_dir / "shards" / "shard-00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100] if damage == "truncated" else os.urandom(64) + data[64:])
    with pytest.raises(DitlabError, match="has a damaged shard .*shard-00001.*rerun the same ditlab-extract command"):
        train(train_cfg(*LATENT_TRAIN, f"data.cache_dir={cache_dir}", f"encoder.path={assets['vae']}"))
    extract(extract_cfg(assets, cache_dir))
    assert shard.read_bytes() == (cache[0] / "shards" / "shard-00001.safetensors").read_bytes()


def test_two_processes_write_disjoint_shards(assets, cache, tmp_path):
    cache_dir = tmp_path / "cache"
    exe = os.path.join(os.path.dirname(sys.executable), "ditlab-extract")
    args = [
        f"data.root={assets['root']}",
        f"encoder.path={assets['vae']}",
        f"cache_dir={cache_dir}",
        "device=cpu",
        "data.resolution=16",
        "data.num_workers=0",
        "data.skip_corrupt=true",
        "shard_size=5",
        "batch_size=4",
        "dtype=float32",
        "world_size=2",
    ]
    procs = [
        subprocess.Popen(
            [exe, *args, f"rank={rank}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    logs = {rank: (cache_dir / "logs" / f"extract_rank{rank}.log").read_text() for rank in (0, 1)}
    written = {
        rank: [k for k in range(4) if f"shard {k}: " in logs[rank] and "kept" not in logs[rank]] for rank in (0, 1)
    }
    assert written == {0: [0, 2], 1: [1, 3]}
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_latents"] == 15
    indices = [i for shard in read_shards(cache_dir, manifest) for i in shard["index"].tolist()]
    assert len(indices) == len(set(indices)) == 15
    reference_dir, reference = cache
    for got, want in zip(read_shards(cache_dir, manifest), read_shards(reference_dir, reference)):
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_extract_cli_errors_are_one_line_naming_the_option(assets, tmp_path):
    res = run_cli("ditlab-extract", f"data.root={assets['root']}", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "ditlab: error: cache_dir is not set: pass the directory for the cache, e.g. cache_dir=/data/latents/in256"
    )
    res = run_cli(
        "ditlab-extract", "data=digits", f"cache_dir={tmp_path / 'c'}", f"encoder.path={assets['vae']}", cwd=tmp_path
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("ditlab: error: data=digits cannot be extracted")
