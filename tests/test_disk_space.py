"""A full disk is found before a run writes anything (docs/runs.md, "Disk space"): the free space of
the run folder's file system against one checkpoint's estimated size."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from conftest import compose_train

import ditlab.tools.sample as sample_tool
from ditlab.checkpoints import disk_space
from ditlab.config import compose
from ditlab.errors import DitlabError
from ditlab.training.train import train

Usage = namedtuple("Usage", "total used free")


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1 for p in root.rglob("*")}


def test_a_full_disk_is_refused_before_the_run_folder_is_written(tmp_path, monkeypatch):
    out = tmp_path / "runs" / "run"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DitlabError) as refused:
        train(compose_train("trainer.max_steps=1", output_dir=out))
    message = str(refused.value)
    assert str(out) in message and "1000 B free" in message and "needs" in message and "\n" not in message
    assert _tree(tmp_path) == {"runs": -1}  # nothing written in the run folder (runs/: the test's own parent)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("disk") / "run"
    train(compose_train("trainer.max_steps=1", "final_samples.num_samples=4", output_dir=out))
    return out


def test_the_estimate_covers_a_real_checkpoint(run, tmp_path):
    out = run
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["optimizer_states"][0]["state"]  # the moments are in the file the estimate sizes
    size = (out / "checkpoints" / "last.ckpt").stat().st_size
    from ditlab.training.train import build_run

    module = build_run(compose_train("trainer.max_steps=1", output_dir=tmp_path / "other")).module
    estimate = disk_space.checkpoint_bytes(module, module.make_optimizer) - disk_space.SLACK_BYTES
    assert size <= estimate <= 1.5 * size, (size, estimate)


def test_the_optimizer_state_is_read_from_the_optimizer():
    adam = disk_space.optimizer_state_per_param(lambda p, lr: torch.optim.AdamW([q for _, q in p], lr=lr))
    sgd = disk_space.optimizer_state_per_param(lambda p, lr: torch.optim.SGD([q for _, q in p], lr=lr))
    momentum = disk_space.optimizer_state_per_param(
        lambda p, lr: torch.optim.SGD([q for _, q in p], lr=lr, momentum=0.9)
    )
    assert (round(adam), sgd, momentum) == (2, 0, 1)


def test_sampling_refuses_a_full_disk_before_writing(run, tmp_path, monkeypatch):
    out = tmp_path / "samples"
    free = 10 * 2**20
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    cfg = compose("sample", [f"ckpt={run}", f"out={out}", "num_samples=200000", "batch_size=4"])
    with pytest.raises(DitlabError, match=r"samples: 10.0 MiB free on its file system, 200000 samples needs"):
        sample_tool.sample(cfg)
    assert not out.exists()
