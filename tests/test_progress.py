"""Every long loop shows a bar with counts and an ETA; progress=false turns them all off."""

from __future__ import annotations

import logging
import re

import torch
from latent_artifacts import compose_extract, make_image_folder, make_tiny_vae

from ditlab import progress
from ditlab.cache.extract import extract
from ditlab.cli import compose
from ditlab.metrics.extractors import Extractor
from ditlab.metrics.real_stats import compute_real_stats
from ditlab.tools.sample import sample
from ditlab.training.train import train

# tqdm's "desc: 100%|####| 20/20 [00:01<00:00, 15.2img/s]": count, elapsed<remaining (the ETA), rate.
BAR = r"{desc}: +100%\|.*\| {n}/{n} \[[0-9:]+<[0-9:]+, +[0-9.?]+ ?img/s\]"


def _bar(text: str, desc: str, n: int) -> bool:
    return re.search(BAR.format(desc=re.escape(desc), n=n), text) is not None


def test_training_samples_and_ditlab_sample_show_bars_and_progress_false_hides_them(
    train_cfg, tmp_path, capsys, caplog
):
    train(train_cfg("progress=true", "trainer.enable_progress_bar=true"))
    out, err = capsys.readouterr()
    assert _bar(err, "final samples", 20)
    # The training bar (callbacks/progress_bar, on stdout): steps out of trainer.max_steps
    assert re.search(r"Training \(epoch 0\): .*\| 4/4 \[", out), out

    overrides = [f"ckpt={tmp_path / 'run'}", "num_samples=6", "batch_size=2", "sampler=ddim", "sampler.steps=2"]
    sample(compose("sample", [*overrides, f"out={tmp_path / 's1'}"]))
    assert _bar(capsys.readouterr().err, "sampling", 6)

    with caplog.at_level(logging.INFO, logger="ditlab"):
        sample(compose("sample", [*overrides, f"out={tmp_path / 's2'}", "progress=false"]))
    assert "sampling" not in capsys.readouterr().err
    assert "sampled 6 / 6" in caplog.text  # batch logs get a line per batch instead

    train(train_cfg("progress=false", "trainer.enable_progress_bar=true", "overwrite=true"))
    out, err = capsys.readouterr()
    assert "final samples" not in err and "Training (epoch" not in out + err


def test_real_statistics_show_a_bar_with_the_image_count(capsys):
    class Toy(torch.nn.Module):  # uint8 images -> one 3-wide output
        def forward(self, x):
            return {"pool": x.flatten(1).float()[:, :3]}

    toy = Extractor(name="toy", net=Toy(), outputs={"pool": 3}, rgb=False)
    batches = (torch.rand(4, 1, 8, 8) * 2 - 1 for _ in range(3))
    stats = compute_real_stats(batches, toy, "cpu", needs={"pool": False}, num_images=12)["pool"]
    assert stats.count == 12 and _bar(capsys.readouterr().err, "real stats (toy)", 12)


def test_latent_extraction_shows_one_bar_over_its_images(tmp_path, capsys):
    make_image_folder(tmp_path / "train", per_class=2, corrupt=False)  # 6 + 3 special files = 9 images
    vae = make_tiny_vae(tmp_path / "vae")
    cfg = compose_extract(f"data.root={tmp_path / 'train'}", f"encoder.path={vae}", f"cache_dir={tmp_path / 'c'}")
    assert extract(cfg)["complete"]
    assert _bar(capsys.readouterr().err, "extract (rank 0)", 9)


def test_bars_are_off_under_tqdm_disable_and_on_other_ranks(monkeypatch):
    assert progress.enabled()
    with progress.enabled_if(False):
        assert not progress.enabled() and progress.bar(total=3).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress.enabled()
    monkeypatch.delenv("TQDM_DISABLE")
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert not progress.enabled()
