"""Loading at scale: disjoint per-process shards, a new order every epoch, same order for the same
seed, worker processes, and a cache dataset that holds no data in memory."""

import pickle
from types import SimpleNamespace

import pytest
import torch
from latent_artifacts import compose_extract, make_image_folder, make_tiny_vae

from ditlab.cache.extract import extract
from ditlab.data.imagefolder import ImageFolderDataModule
from ditlab.data.latents import LatentsDataModule


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("sharding")
    root = base / "train"
    make_image_folder(root, per_class=6, corrupt=False)  # 21 images
    vae = make_tiny_vae(base / "vae")
    cache_dir = base / "cache"
    extract(compose_extract(f"data.root={root}", f"encoder.path={vae}", f"cache_dir={cache_dir}", "shard_size=8"))
    return {"root": root, "cache": cache_dir}


def modules(sources, seed, batch_size=4, num_workers=0):
    return [
        ImageFolderDataModule(
            root=str(sources["root"]), resolution=16, batch_size=batch_size, num_workers=num_workers, seed=seed
        ),
        LatentsDataModule(cache_dir=str(sources["cache"]), batch_size=batch_size, num_workers=num_workers, seed=seed),
    ]


def epoch_indices(dm, rank, world, epoch):
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)  # what Lightning's Trainer tells the module
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # Lightning calls this at the start of every epoch
    return list(loader.sampler), loader


@pytest.mark.parametrize("kind", [0, 1], ids=["imagefolder", "latents"])
def test_two_processes_read_disjoint_reshuffled_deterministic_shards(sources, kind):
    dm = modules(sources, seed=3)[kind]
    per_epoch = []
    for epoch in (0, 1):
        (a, loader_a), (b, loader_b) = (epoch_indices(dm, r, 2, epoch) for r in (0, 1))
        n = len(dm.dataset)
        assert not set(a) & set(b)  # disjoint
        assert len(a) == len(b) == n // 2  # equal shares; the odd item out is dropped
        assert loader_a.batch_size == 2  # global batch 4 over 2 processes
        per_epoch.append(a + b)
    assert per_epoch[0] != per_epoch[1]  # a new permutation every epoch
    same_seed = modules(sources, seed=3)[kind]
    assert epoch_indices(same_seed, 0, 2, 1)[0] == per_epoch[1][: n // 2]  # reproducible from the seed
    other_seed = modules(sources, seed=4)[kind]
    assert epoch_indices(other_seed, 0, 2, 1)[0] != per_epoch[1][: n // 2]


def test_worker_processes_load_both_kinds(sources):
    for dm in modules(sources, seed=0, num_workers=2):
        _, loader = epoch_indices(dm, 0, 1, 0)
        assert loader.num_workers == 2 and loader.persistent_workers
        batch = next(iter(loader))
        x, y = dm.on_before_batch_transfer(batch) if dm.name == "imagefolder" else batch
        assert x.shape[0] == 4 and y.dtype == torch.int64
        assert x.shape[1:] == ((3, 16, 16) if dm.name == "imagefolder" else (8, 8, 8))  # latents: [mean | std]


def test_the_cache_dataset_is_opened_lazily_and_holds_no_latents(sources):
    dm = LatentsDataModule(cache_dir=str(sources["cache"]), batch_size=4, num_workers=0)
    dm.setup()
    ds = dm.dataset
    x, y = ds[len(ds) - 1]
    assert x.shape == (8, 8, 8) and isinstance(y, int)
    # What a worker process receives: file names and offsets, no tensors and no open files.
    assert len(pickle.dumps(ds)) < 2_000
    assert not any(isinstance(v, torch.Tensor) for v in vars(ds).values())
    assert len(ds._handles) <= 3  # shards opened on use, read one row at a time (memory-mapped)
