"""Sample-quality metrics: Fréchet / kernel distances through torchmetrics with a custom extractor,
the explicit [-1, 1] -> uint8 conversion, the real-statistics cache, and Inception loading (offline
error, local weights file)."""

import urllib.error

import numpy as np
import pytest
import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.metrics.extractors import WEIGHTS_KEY, Extractor, build_extractor, inception_extractor
from ditlab.metrics.images import real_to_uint8, to_metric_input
from ditlab.metrics.real_stats import (
    cache_path,
    compute_real_stats,
    load_real_stats,
    merge_shards,
    save_real_stats,
    stats_key,
)
from ditlab.metrics.suite import METRICS, MetricSuite, check_metric_names


class ToyFeatures(nn.Module):
    """A fixed random projection of the pixels: enough to tell two image sets apart; 3 logits."""

    num_features = 8

    def __init__(self, pixels: int):
        super().__init__()
        self.proj = nn.Linear(pixels, self.num_features)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        self.head = nn.Linear(self.num_features, 3)

    def forward(self, x):  # uint8 (N, 1, H, W)
        pool = self.proj(x.float().flatten(1) / 255.0)
        return {"pool": pool, "logits": self.head(pool)}


def toy_extractor(side: int = 6) -> Extractor:
    return Extractor(
        name="toy",
        net=ToyFeatures(side * side),
        outputs={"pool": 8, "logits": 3},
        rgb=False,
        identity={"name": "toy", "side": side},
    )


def images(n: int, seed: int, shift: float = 0.0, side: int = 6) -> torch.Tensor:
    """(N, 1, side, side) floats in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, side, side, generator=g) * 1.2 - 0.6 + shift).clamp(-1, 1)


def suite_with_real(names, real, **options):
    ex = toy_extractor()
    suite = MetricSuite(names, {"digits": ex}, options)
    stats = compute_real_stats([real], ex, "cpu", suite.needs_real()["digits"])
    suite.load_real({"digits": {o: s.side() for o, s in stats.items()}})
    return suite


def test_identical_sets_give_zero_and_shifted_sets_a_positive_distance():
    real = images(200, seed=0)
    suite = suite_with_real(["fd_digits", "kd_digits"], real, kid_subsets=10, kid_subset_size=100)
    labels = np.zeros(200, dtype=np.int64)
    suite.update(real_to_uint8(real), labels)
    same = suite.compute()
    suite.reset()
    suite.update(real_to_uint8(images(200, seed=0, shift=0.4)), labels)
    shifted = suite.compute()
    suite.reset()  # the real statistics survive a reset
    suite.update(real_to_uint8(images(200, seed=1)), labels)
    other_draw = suite.compute()
    assert abs(same["fd_digits"]) < 1e-6
    assert shifted["fd_digits"] > 0.1 and shifted["kd_digits"] > 0
    # KID is an unbiased estimate over random subsets: ~0 (either sign) for identical sets.
    assert abs(same["kd_digits"]) < 0.02 * shifted["kd_digits"]
    assert shifted["fd_digits"] > 20 * other_draw["fd_digits"]  # a shift is far from sampling noise


def test_accuracy_counts_samples_classified_as_requested():
    ex = toy_extractor()
    suite = MetricSuite(["digits_accuracy"], {"digits": ex})
    x = real_to_uint8(images(30, seed=2))
    predicted = ex.net(to_metric_input(x, rgb=False))["logits"].argmax(1).numpy()
    wrong = (predicted + 1) % 3
    suite.update(x, np.where(np.arange(30) < 10, predicted, wrong))
    assert suite.compute()["digits_accuracy"] == pytest.approx(10 / 30)


def test_samples_in_minus_one_one_become_uint8_with_dit_rule_and_grey_becomes_rgb_only_for_inception():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0]).view(1, 1, 1, 5)
    assert real_to_uint8(x).ravel().tolist() == [0, 64, 128, 255, 255]  # clamp(127.5 x + 128), truncated
    u8 = real_to_uint8(images(2, seed=0))
    assert to_metric_input(u8, rgb=False).shape == (2, 1, 6, 6)
    rgb = to_metric_input(u8, rgb=True)
    assert rgb.shape == (2, 3, 6, 6) and rgb.dtype == torch.uint8 and torch.equal(rgb[:, 0], rgb[:, 2])
    with pytest.raises(ValueError):
        to_metric_input(np.zeros((2, 6, 6, 1), dtype=np.float32), rgb=False)


def test_metric_names_say_which_features_they_use():
    inception = {n for n in METRICS.names() if METRICS.get(n).extractor == "inception"}
    assert inception == {"fid", "sfid", "kid", "is", "precision", "recall"}
    assert METRICS.get("sfid").output == "spatial" and METRICS.get("fid").output == "pool"
    assert METRICS.get("fd_digits").extractor == "digits" and METRICS.get("fd_digits").kind == "frechet"
    with pytest.raises(DitlabError, match="eval.metrics"):
        check_metric_names(["fid", "fd_inception"])


def test_real_statistics_are_cached_once_keyed_and_never_overwritten(tmp_path):
    ex = toy_extractor()
    data = {"name": "toy", "resolution": 6, "batch_size": 7}
    key = stats_key(data, 6, 50, ex)
    assert load_real_stats(tmp_path, key, {"pool": False}) is None
    stats = compute_real_stats([images(25, 0), images(25, 1)], ex, "cpu", {"pool": True, "logits": False})
    save_real_stats(tmp_path, key, stats)
    path = cache_path(tmp_path, key, "pool")
    first = path.read_bytes()
    # A second writer (another process, another value) never replaces the entry.
    save_real_stats(tmp_path, key, compute_real_stats([images(50, 5)], ex, "cpu", {"pool": False}))
    assert path.read_bytes() == first
    loaded = load_real_stats(tmp_path, key, {"pool": True, "logits": False})
    assert loaded["pool"].count == 50 and torch.allclose(loaded["pool"].feature_sum, stats["pool"].feature_sum)
    assert loaded["pool"].features.shape == (50, 8) and loaded["logits"].feature_sum.shape == (3,)
    # The key covers dataset, resolution, count, extractor and output (batch size is not part of it).
    assert cache_path(tmp_path, stats_key({**data, "batch_size": 99}, 6, 50, ex), "pool") == path
    assert cache_path(tmp_path, key, "logits") != path
    for other in (
        stats_key(data, 6, 40, ex),
        stats_key({**data, "name": "x"}, 6, 50, ex),
        stats_key(data, 6, 50, toy_extractor(side=5)),
    ):
        assert cache_path(tmp_path, other, "pool") != path
    # A file whose stored key disagrees is refused, not silently used or recomputed.
    other_key = stats_key(data, 6, 51, ex)
    cache_path(tmp_path, other_key, "pool").write_bytes(first)
    with pytest.raises(DitlabError, match="different setting"):
        load_real_stats(tmp_path, other_key, {"pool": False})


def test_statistics_of_interleaved_shards_equal_those_of_the_whole_set():
    ex = toy_extractor()
    real = images(11, seed=3)
    whole = compute_real_stats([real], ex, "cpu", {"pool": True})["pool"]
    parts = [compute_real_stats([real[r::3]], ex, "cpu", {"pool": True}) for r in range(3)]
    merged = merge_shards(parts)["pool"]
    assert merged.count == 11
    assert torch.allclose(merged.feature_cov_sum, whole.feature_cov_sum)
    assert torch.allclose(merged.features, whole.features)  # back in dataset order


def test_digits_metrics_refuse_other_datasets(tmp_path):
    class Folder:
        name, channels, resolution = "imagefolder", 3, 32

    with pytest.raises(DitlabError, match="data=digits"):
        build_extractor("digits", data=Folder(), eval_cfg=None, cache_dir=tmp_path)


def test_offline_inception_without_weights_is_one_sentence_naming_the_key(monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    with pytest.raises(DitlabError) as e:
        inception_extractor(None, antialias=False)
    message = str(e.value)
    assert WEIGHTS_KEY in message and "weights-inception-2015-12-05" in message and "\n" not in message
    with pytest.raises(DitlabError, match=WEIGHTS_KEY):
        inception_extractor("/nonexistent/weights.pth", antialias=False)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's Inception-v3 with random weights, saved like the real weights file. Its
    BatchNorm statistics are calibrated on a few inputs (uncalibrated random weights give FID ~ 0
    for any two sets)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    mp = pytest.MonkeyPatch()
    try:  # build the network without its download, random init
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    path = tmp_path_factory.mktemp("inception") / "weights.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_loads_a_local_weights_file_and_gives_pool_features_and_logits(random_inception_weights):
    ex = inception_extractor(str(random_inception_weights), antialias=False)
    assert ex.identity["weights"].startswith("sha256:") and ex.identity["antialias"] is False
    x = to_metric_input(real_to_uint8(images(2, seed=0, side=8)), rgb=ex.rgb)  # grey 8x8 -> RGB, resized to 299
    calls = []
    ex.net.net.Conv2d_1a_3x3.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = ex.net(x)
    # One pass gives all three; sFID's spatial features are mixed_6/conv's first 7 channels, 17x17x7.
    assert len(calls) == 1 and ex.outputs == {"pool": 2048, "spatial": 2023, "logits": 1008}
    assert {k: tuple(v.shape) for k, v in out.items()} == {"pool": (2, 2048), "spatial": (2, 2023), "logits": (2, 1008)}
    with torch.no_grad():
        branch = ex.net.net.Mixed_6d.branch1x1
        seen = []
        h = branch.register_forward_hook(lambda m, a, o: seen.append(o))
        again = ex.net(x)
        h.remove()
    assert seen[0].shape == (2, 192, 17, 17)  # mixed_6/conv: 192 channels at 17x17
    hwc = seen[0][:, :7].permute(0, 2, 3, 1).reshape(2, -1)  # TF's NHWC flattening, as in ADM's mu_s
    assert torch.equal(again["spatial"], hwc) and torch.equal(again["spatial"], out["spatial"])


@pytest.mark.slow  # ~10 Inception forwards at 299x299 on CPU; the test above covers loading
def test_fid_on_inception_features_from_a_local_weights_file(random_inception_weights):
    ex = inception_extractor(str(random_inception_weights), antialias=False)
    real = images(3, seed=0, side=8)
    suite = MetricSuite(["fid", "sfid"], {"inception": ex})
    stats = compute_real_stats([real], ex, "cpu", suite.needs_real()["inception"])
    suite.load_real({"inception": {o: s.side() for o, s in stats.items()}})
    suite.update(real_to_uint8(real), np.zeros(3))
    same = suite.compute()["fid"]
    suite.reset()
    suite.update(real_to_uint8((real + 0.8).clamp(-1, 1)), np.zeros(3))
    shifted = suite.compute()["fid"]
    assert shifted > 0 and abs(same) < 1e-3 * shifted


def test_real_images_come_from_digits_or_an_image_folder_sharded_across_processes(tmp_path):
    from PIL import Image

    from ditlab.data.digits import DigitsDataModule
    from ditlab.data.imagefolder import ImageFolderDataModule
    from ditlab.metrics.real_stats import real_image_batches

    n, batches = real_image_batches(DigitsDataModule(resolution=8), 10, 3, rank=1, world_size=2)
    assert n == 10 and [len(b) for b in batches] == [3, 2]  # images 1, 3, 5, 7, 9
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    folder = ImageFolderDataModule(root=str(tmp_path), resolution=16, batch_size=4, num_workers=0)
    n, batches = real_image_batches(folder, None, 4, rank=0, world_size=2)
    (batch,) = list(batches)
    assert n == 6 and batch.shape == (3, 3, 16, 16) and -1 <= batch.min() and batch.max() <= 1


def test_a_corrupt_real_image_never_enters_the_reference_statistics(tmp_path):
    from latent_artifacts import make_image_folder

    from ditlab.data.imagefolder import ImageFolderDataModule
    from ditlab.errors import DitlabError
    from ditlab.metrics.real_stats import real_image_batches

    special = make_image_folder(tmp_path, per_class=2, corrupt=True)
    strict = ImageFolderDataModule(root=str(tmp_path), resolution=16, batch_size=4, num_workers=0)
    with pytest.raises(DitlabError, match=f"cannot read image {special['corrupt']}.*skip_corrupt"):
        list(real_image_batches(strict, None, 64)[1])
    lenient = ImageFolderDataModule(root=str(tmp_path), resolution=16, batch_size=4, num_workers=0, skip_corrupt=True)
    n, batches = real_image_batches(lenient, None, 64)
    (batch,) = list(batches)
    assert len(batch) == n - 1 and str(special["corrupt"]) in lenient.corrupt.skipped
