"""``ditlab-sample``: grid + npz + recipe for every sampler, determinism, streaming, refusals."""

import gc
import json
import tracemalloc
import weakref

import numpy as np
import pytest
import torch
from conftest import compose_train, run_cli
from PIL import Image

import ditlab.tools.sample as sample_tool
from ditlab.config import compose
from ditlab.errors import DitlabError
from ditlab.models.dit import DiT
from ditlab.models.official import model_preset
from ditlab.tools.npz_writer import StreamingNpzWriter
from ditlab.training.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two 3-step runs of the fast default config: ddpm and its flow twin."""
    root = tmp_path_factory.mktemp("runs")
    for objective in ("ddpm", "flow"):
        train(compose_train(f"objective={objective}", "trainer.max_steps=3", output_dir=root / objective))
    return root


def compose_sample(*overrides):
    return compose("sample", ["num_samples=12", "batch_size=5", "grid.columns=3", *overrides])


def load_npz(path):
    with np.load(path) as f:
        return f["arr_0"], f["arr_1"]


@pytest.mark.parametrize(
    "run,overrides",
    [
        ("ddpm", []),  # the run's own sampler (ddpm, 4 steps in the fast config)
        ("ddpm", ["sampler=ddim", "sampler.steps=5"]),
        ("ddpm", ["sampler=dpm_solver", "sampler.steps=5"]),
        ("ddpm", ["sampler=diffusers", "sampler.steps=5"]),
        ("flow", []),  # euler
        ("flow", ["sampler=heun", "sampler.steps=3", "guidance.interval=[0.5,1.0]"]),
    ],
)
def test_writes_grid_npz_and_recipe_for_every_sampler(runs, tmp_path, run, overrides):
    recipe = sample_tool.sample(compose_sample(f"ckpt={runs / run}", f"out={tmp_path / 'out'}", *overrides))
    images, labels = load_npz(tmp_path / "out" / "samples.npz")
    assert images.dtype == np.uint8 and images.shape == (12, 8, 8, 1)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size[1] > grid.size[0]  # 6 label rows x 2 columns
    on_disk = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert on_disk == recipe
    for key in (
        "sampler",
        "steps",
        "nfe",
        "model_calls",
        "cfg_scale",
        "cfg_channels",
        "cfg_interval",
        "encoder",
        "precision",
        "num_samples",
        "seed",
        "checkpoint",
        "weights",
    ):
        assert key in on_disk, key
    assert on_disk["checkpoint"].endswith("checkpoints/last.ckpt") and on_disk["weights"] == "ema"
    assert on_disk["cfg_scale"] == 4.0 and on_disk["cfg_channels"] == "all"
    if "guidance.interval=[0.5,1.0]" in overrides:  # heun 3 steps: t = 0, 1/3 (x2), 2/3 -> guided at 0, 1/3, 1/3
        assert on_disk["cfg_interval"] == [0.5, 1.0] and on_disk["nfe"] == 3 * 2 + 2
    else:
        assert on_disk["nfe"] == 2 * on_disk["model_calls"]


def test_fixed_seed_gives_identical_output_and_labels_can_be_chosen(runs, tmp_path):
    arrays = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        sample_tool.sample(
            compose_sample(
                f"ckpt={runs / 'ddpm'}",
                f"out={tmp_path / name}",
                f"seed={seed}",
                "labels=[3,7]",
                "num_samples=6",
                "batch_size=4",
            )
        )
        arrays[name] = load_npz(tmp_path / name / "samples.npz")
    assert np.array_equal(arrays["a"][0], arrays["b"][0]) and not np.array_equal(arrays["a"][0], arrays["c"][0])
    assert arrays["a"][1].tolist() == [3, 3, 3, 7, 7, 7]
    assert (tmp_path / "a" / "grid.png").read_bytes() == (tmp_path / "b" / "grid.png").read_bytes()


def test_sampling_streams_one_batch_at_a_time(runs, tmp_path, monkeypatch):
    alive = []
    real_generate = sample_tool.generate

    def watched_generate(*args, **kwargs):
        for images, labels, nfe in real_generate(*args, **kwargs):
            gc.collect()
            # The caller's loop variable still names the previous batch; anything older must be gone.
            assert not any(ref() is not None for ref in alive[:-1]), "an earlier batch is still held"
            alive.append(weakref.ref(images))
            yield images, labels, nfe

    monkeypatch.setattr(sample_tool, "generate", watched_generate)
    sample_tool.sample(
        compose_sample(
            f"ckpt={runs / 'ddpm'}",
            f"out={tmp_path / 'o'}",
            "num_samples=40",
            "batch_size=4",
            "guidance.scale=1",
            "+sampler.steps=2",
        )
    )
    assert len(alive) == 10 and load_npz(tmp_path / "o" / "samples.npz")[0].shape == (40, 8, 8, 1)


def test_npz_writer_memory_does_not_grow_with_the_number_of_samples(tmp_path):
    batch = np.full((50, 32, 32, 3), 7, dtype=np.uint8)  # 150 KB
    labels = np.arange(50)
    peaks = {}
    for batches in (2, 40):
        writer = StreamingNpzWriter(tmp_path / f"s{batches}.npz", 50 * batches, (32, 32, 3))
        tracemalloc.start()
        for _ in range(batches):
            writer.write(batch, labels)
        writer.close()
        peaks[batches] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[40] < batch.nbytes and peaks[40] < 2 * peaks[2] + 64_000  # 20x the samples, same memory
    images, got_labels = load_npz(tmp_path / "s40.npz")
    assert images.shape == (2000, 32, 32, 3) and (images == 7).all() and got_labels[-50:].tolist() == list(range(50))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2.npz", "s40.npz"]  # no partial files left


def test_nan_samples_are_refused_and_nothing_is_written(runs, tmp_path):
    ckpt = torch.load(runs / "ddpm" / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["state_dict"]["ema.final_layer.linear.bias"].fill_(float("nan"))
    torch.save(ckpt, tmp_path / "nan.ckpt")
    with pytest.raises(DitlabError, match="sampling produced NaN/Inf values .* nothing was written"):
        sample_tool.sample(compose_sample(f"ckpt={tmp_path / 'nan.ckpt'}", f"out={tmp_path / 'o'}"))
    assert not (tmp_path / "o").exists()


def test_existing_outputs_are_never_overwritten_unless_told(runs, tmp_path):
    args = (f"ckpt={runs / 'ddpm'}", f"out={tmp_path / 'o'}", "num_samples=2", "batch_size=2")
    sample_tool.sample(compose_sample(*args))
    before = (tmp_path / "o" / "samples.npz").read_bytes()
    with pytest.raises(DitlabError, match="samples.npz already exists; choose another out=... or pass overwrite=true"):
        sample_tool.sample(compose_sample(*args, "seed=1"))
    assert (tmp_path / "o" / "samples.npz").read_bytes() == before
    sample_tool.sample(compose_sample(*args, "seed=1", "overwrite=true"))
    assert (tmp_path / "o" / "samples.npz").read_bytes() != before


def test_default_output_folder_names_the_recipe(runs):
    # No sampler named: the run's own (euler), with its steps changed by +sampler.steps; the default
    # batch size (other batches draw other noise: a hash in the name, tests/test_run_names.py).
    args = (f"ckpt={runs / 'flow'}", "num_samples=2", "+sampler.steps=2", "batch_size=100")
    recipe = sample_tool.sample(compose_sample(*args))
    assert recipe["outputs"]["npz"].endswith("flow/samples/last_euler2_cfg4-all_n2_seed0/samples.npz")


def test_official_state_dict_with_first3_guidance(tmp_path):
    torch.manual_seed(0)
    model = DiT(input_size=8, patch_size=4, in_channels=3, out_channels=6, num_classes=10, **model_preset("tiny"))
    torch.save(model.state_dict(), tmp_path / "DiT-tiny-4.pt")
    args = (
        f"official={tmp_path / 'DiT-tiny-4.pt'}",
        "name=DiT-tiny/4",
        "image_size=8",
        "num_classes=10",
        f"out={tmp_path / 'o'}",
        "num_samples=4",
        "batch_size=4",
        "sampler=ddpm",
        "sampler.steps=3",
    )
    with pytest.raises(DitlabError, match="official DiT checkpoints are latent-space models.*encoder=sd_vae"):
        sample_tool.sample(compose_sample(*args))
    recipe = sample_tool.sample(compose_sample(*args, "encoder=identity", "guidance.channels=first3"))
    assert load_npz(tmp_path / "o" / "samples.npz")[0].shape == (4, 8, 8, 3)
    assert recipe["source"] == "official" and recipe["cfg_channels"] == "first3" and recipe["nfe"] == 6
    assert recipe["objective"]["var_type"] == "learned_range"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["sampler=euler"], "sampler 'euler' cannot sample a model trained with the 'ddpm' objective"),
        (["sampler=ddim", "sampler.steps=1001"], "sampler.steps=1001 exceeds the 1000 steps"),
        (["labels=[10]"], r"labels must be a non-empty list of class ids in \[0, 10\)"),
        (["ckpt=null"], "give exactly one of ckpt="),
        (["precision=fp8"], "precision must be one of"),
        (["sampler=dpm_solver", "sampler.scheduler=X"], None),  # struct mode: not a key of dpm_solver
    ],
)
def test_bad_input_is_refused_before_writing(runs, tmp_path, overrides, message):
    if message is None:
        with pytest.raises(Exception, match="scheduler"):
            compose_sample(f"ckpt={runs / 'ddpm'}", *overrides)
        return
    with pytest.raises(DitlabError, match=message):
        sample_tool.sample(compose_sample(f"ckpt={runs / 'ddpm'}", f"out={tmp_path / 'o'}", *overrides))
    assert not (tmp_path / "o").exists()


def test_cfg_on_a_model_trained_without_label_dropout_is_refused(tmp_path):
    run = tmp_path / "nodrop"
    train(compose_train("model.class_dropout_prob=0", "guidance.scale=1", "trainer.max_steps=1", output_dir=run))
    with pytest.raises(
        DitlabError, match="guidance needs a class-conditional model trained with label dropout.*guidance.scale=1"
    ):
        sample_tool.sample(compose_sample(f"ckpt={run}", f"out={tmp_path / 'o'}"))
    sample_tool.sample(compose_sample(f"ckpt={run}", f"out={tmp_path / 'o'}", "guidance.scale=1"))


def test_console_script(runs, tmp_path):
    ok = run_cli(
        "ditlab-sample",
        f"ckpt={runs / 'flow'}",
        f"out={tmp_path / 'o'}",
        "num_samples=3",
        "sampler=euler",
        "sampler.steps=2",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "o" / "samples.json").read_text())["sampler"] == "euler"
    bad = run_cli("ditlab-sample", f"ckpt={runs / 'flow'}", "sampler=ddpm", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "ditlab: error: sampler 'ddpm' cannot sample a model trained with the 'flow' objective; "
        "choose a sampler for that family (sampler=<euler|heun>)"
    ]
