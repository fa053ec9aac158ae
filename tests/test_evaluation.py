"""The ADM evaluator's numbers in PyTorch: a Fréchet distance that survives ill-conditioned
covariances, FID equal to torchmetrics' on the same features, precision/recall equal to a
brute-force k-NN, the Inception Score by its definition, ADM-layout reference batches read and
written (and one line when one lacks what a metric needs), and ``ditlab-eval`` through main()."""

import json
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.metrics import manifold
from ditlab.metrics.extractors import EXTRACTORS, Extractor
from ditlab.metrics.frechet import Moments, frechet_distance
from ditlab.metrics.manifold import inception_score, precision_recall
from ditlab.metrics.reference import read_reference, write_reference
from ditlab.metrics.suite import MetricSuite, RealSide


def adm_naive_trace_sqrt(s1, s2):
    """tr sqrt(s1 s2) as the ADM evaluator (and pytorch-fid) compute it: scipy's sqrtm, refusing a
    result whose diagonal has imaginary parts above 1e-3."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return np.trace(covmean)


def test_frechet_distance_is_right_where_scipy_sqrtm_fails_on_ill_conditioned_covariances():
    # 12 samples in 128 dimensions with per-dimension scales over four decades: both covariances are
    # rank 11 and their product is ill-conditioned, as in sFID (2,023-d) on small sample sets.
    rng = np.random.default_rng(3)
    d, n = 128, 12
    scale = 1e4 * 10.0 ** rng.uniform(-4, 0, d)
    x, y = rng.standard_normal((n, d)) * scale, (rng.standard_normal((n, d)) + 0.1) * scale
    mx, my = Moments.of(x), Moments.of(y)
    # Exact oracle: with s1 = AᵀA, s2 = BᵀB, tr sqrt(s1 s2) is the nuclear norm of A Bᵀ (an n×n SVD).
    a, b = (x - x.mean(0)) / np.sqrt(n - 1), (y - y.mean(0)) / np.sqrt(n - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    s1, s2 = mx.sigma.numpy(), my.sigma.numpy()
    exact = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * nuclear
    with pytest.raises(ValueError, match="Imaginary component"):
        adm_naive_trace_sqrt(s1, s2)  # the evaluator stops here ("Imaginary component ...")
    assert frechet_distance(mx.mu, s1, my.mu, s2) == pytest.approx(exact, rel=1e-7)
    # Identical singular sets: 0 up to rounding of the ~1e9 traces, never negative beyond it.
    assert abs(frechet_distance(mx.mu, s1, mx.mu, s1)) < 1e-7 * np.trace(s1)
    # Well conditioned: the closed form for commuting covariances.
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    ea, eb = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    closed = 1.0 + ea.sum() + eb.sum() - 2 * np.sqrt(ea * eb).sum()
    got = frechet_distance(np.zeros(6), (q * ea) @ q.T, np.eye(6)[0], (q * eb) @ q.T)
    assert got == pytest.approx(closed, rel=1e-12)


class ToyInception(nn.Module):
    """Stands in for Inception (same output names and roles) at toy sizes: pool 6, spatial 4, logits 5."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(12, 15, generator=g), requires_grad=False)

    def forward(self, x):  # uint8 (N, 3, 2, 2)
        h = (x.float().flatten(1) / 255.0) @ self.w
        return {"pool": h[:, :6], "spatial": h[:, 6:10].tanh(), "logits": 3 * h[:, 10:]}


def toy_inception() -> Extractor:
    return Extractor(
        "inception",
        ToyInception(),
        {"pool": 6, "spatial": 4, "logits": 5},
        rgb=True,
        identity={"name": "toy-inception"},
    )


def toy_images(n, seed, shift=0):
    return np.random.default_rng(seed).integers(0 + shift, 200 + shift, (n, 2, 2, 3), dtype=np.uint8)


ADM = ["fid", "sfid", "is", "precision", "recall"]


def test_fid_matches_torchmetrics_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Passthrough(nn.Module):
        num_features = 6

        def forward(self, x):
            return x

    ex = toy_inception()
    real, fake = toy_images(300, 0), toy_images(200, 1, shift=30)
    with torch.no_grad():
        fr = ex.net(torch.from_numpy(real).permute(0, 3, 1, 2))["pool"]
        ff = ex.net(torch.from_numpy(fake).permute(0, 3, 1, 2))["pool"]
    reference = FrechetInceptionDistance(feature=Passthrough())
    reference.update(fr, real=True)
    reference.update(ff, real=False)
    suite = MetricSuite(["fid"], {"inception": ex})
    suite.load_real({"inception": {"pool": RealSide(Moments.of(fr))}})
    for i in range(0, 200, 64):  # batches accumulate float64 sums
        suite.update(fake[i : i + 64], np.zeros(len(fake[i : i + 64])))
    ours = suite.compute()["fid"]
    assert ours > 1 and ours == pytest.approx(float(reference.compute()), rel=1e-5)


def brute_force_pr(real, fake, k):
    def radii(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    d = ((fake[:, None] - real[None]) ** 2).sum(-1)  # fake x real
    precision = (d <= radii(real)[None]).any(1).mean()
    recall = (d.T <= radii(fake)[None]).any(1).mean()
    return precision, recall


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_equal_a_brute_force_knn(monkeypatch, k):
    monkeypatch.setattr(manifold, "BLOCK", 7)  # several distance blocks on each side
    rng = np.random.default_rng(k)
    real = rng.standard_normal((40, 5))
    fake = np.concatenate([rng.standard_normal((20, 5)), rng.standard_normal((15, 5)) * 0.3 + 2.5])
    expected = brute_force_pr(real, fake, k)
    got = precision_recall(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), k)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got[0] < 1 and 0 < got[1] < 1
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(real), k) == (1.0, 1.0)


def test_inception_score_follows_its_definition_over_consecutive_splits():
    sure = torch.eye(4).repeat(3, 1) * 50  # 12 confident samples spread over 4 classes
    assert inception_score(sure, split_size=4)[0] == pytest.approx(4.0, rel=1e-6)
    assert inception_score(torch.zeros(10, 7), split_size=5) == pytest.approx((1.0, 0.0))
    logits = torch.randn(11, 5, generator=torch.Generator().manual_seed(0))
    p = torch.softmax(logits.double(), 1).numpy()
    scores = [np.exp((q * (np.log(q) - np.log(q.mean(0)))).sum(1).mean()) for q in (p[:5], p[5:10], p[10:])]
    assert inception_score(logits, split_size=5) == pytest.approx((np.mean(scores), np.std(scores)))


def write_adm_batch(path, images, ex, drop=()):
    """An ADM-layout reference batch made here: arr_0 images, mu/sigma, mu_s/sigma_s."""
    with torch.no_grad():
        out = ex.net(torch.from_numpy(images).permute(0, 3, 1, 2))
    arrays = {
        "arr_0": images,
        "mu": out["pool"].double().mean(0).numpy(),
        "sigma": np.cov(out["pool"].double().numpy().T),
        "mu_s": out["spatial"].double().mean(0).numpy(),
        "sigma_s": np.cov(out["spatial"].double().numpy().T),
    }
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    return out


def test_a_test_made_adm_reference_batch_is_read_and_ditlab_writes_the_same_layout(tmp_path):
    ex = toy_inception()
    ref_images = toy_images(50, 0)
    feats = write_adm_batch(tmp_path / "ref.npz", ref_images, ex)
    suite = MetricSuite(ADM, {"inception": ex}, {"is_split_size": 10})
    real = read_reference(tmp_path / "ref.npz", suite)
    pool, spatial = real["inception"]["pool"], real["inception"]["spatial"]
    assert torch.allclose(pool.moments.mu, feats["pool"].double().mean(0)) and pool.moments.count == 50
    assert spatial.moments.sigma.shape == (4, 4) and spatial.features is None
    assert torch.allclose(pool.features, feats["pool"])  # P/R activations computed from arr_0
    suite.load_real(real)
    suite.update(ref_images, np.zeros(50))
    same = suite.compute()
    assert abs(same["fid"]) < 1e-9 and abs(same["sfid"]) < 1e-9 and same["precision"] == same["recall"] == 1.0
    suite.reset()
    suite.update(toy_images(40, 1, shift=40), np.zeros(40))
    other = suite.compute()
    assert other["fid"] > 1 and other["sfid"] > 0.01 and other["precision"] < 1 and other["is"] > 1
    # Round trip: ditlab's own statistics in ADM keys, readable without the images.
    write_reference(tmp_path / "mine.npz", suite.fake_sides(), info={"source": "test"})
    with np.load(tmp_path / "mine.npz") as f:
        assert {"mu", "sigma", "mu_s", "sigma_s", "activations", "ditlab_info"} <= set(f.files)
        assert "arr_0" not in f.files and f["sigma_s"].shape == (4, 4)
    again = MetricSuite(ADM, {"inception": ex}, {"is_split_size": 10})
    again.load_real(read_reference(tmp_path / "mine.npz", again))
    again.update(toy_images(40, 1, shift=40), np.zeros(40))
    assert again.compute()["fid"] == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize(
    "drop, metric, missing",
    [
        (("arr_0",), "precision", "activations"),
        (("arr_0", "mu_s"), "sfid", "mu_s+sigma_s"),
    ],
)
def test_a_reference_lacking_what_a_metric_needs_is_one_line(tmp_path, drop, metric, missing):
    ex = toy_inception()
    write_adm_batch(tmp_path / "ref.npz", toy_images(20, 0), ex, drop=drop)
    with pytest.raises(DitlabError) as e:
        read_reference(tmp_path / "ref.npz", MetricSuite([metric], {"inception": ex}))
    message = str(e.value)
    assert missing in message and metric in message and "arr_0" in message and "\n" not in message
    # With the images there, whatever is missing is computed from them instead.
    write_adm_batch(tmp_path / "full.npz", toy_images(20, 0), ex, drop=("mu_s", "sigma_s"))
    assert read_reference(tmp_path / "full.npz", MetricSuite(["sfid"], {"inception": ex}))["inception"][
        "spatial"
    ].moments


def test_ditlab_eval_main_scores_a_sample_file_against_a_reference(tmp_path, monkeypatch, capsys):
    from ditlab.tools.evaluate import main

    # The real Inception needs weights this machine cannot download; the same code path runs with a
    # toy network registered under its name.
    monkeypatch.setitem(EXTRACTORS._entries, "inception", lambda **kw: toy_inception())
    write_adm_batch(tmp_path / "ref.npz", toy_images(60, 0), toy_inception())
    samples = toy_images(30, 1, shift=20)
    np.savez(tmp_path / "samples.npz", arr_0=samples, arr_1=np.arange(30) % 3)
    main(
        [
            f"samples={tmp_path / 'samples.npz'}",
            f"ref={tmp_path / 'ref.npz'}",
            "eval.is_split_size=10",
            "eval.batch_size=8",
            f"out={tmp_path / 'out.json'}",
            f"write_ref={tmp_path / 'samples_ref.npz'}",
            "progress=false",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "out.json").read_text())
    assert printed == saved and saved["num_samples"] == 30 and set(ADM) <= set(saved)
    assert saved["fid"] > 0 and 0 <= saved["precision"] <= 1 and saved["is_std"] >= 0
    with np.load(tmp_path / "samples_ref.npz") as f:  # usable as a reference, by ditlab or the ADM evaluator
        assert np.array_equal(f["arr_0"], samples) and f["mu"].shape == (6,)
    (tmp_path / "out.json").write_text("{}")  # a rerun replaces its results only when asked
    main([f"samples={tmp_path / 'samples.npz'}", f"ref={tmp_path / 'ref.npz'}", "eval.is_split_size=10",
          "eval.metrics=[fid]", f"out={tmp_path / 'out.json'}", "overwrite=true", "progress=false"])  # fmt: skip
    assert json.loads((tmp_path / "out.json").read_text())["fid"] == pytest.approx(saved["fid"])
    for argv, needle in (
        ([f"samples={tmp_path / 'samples.npz'}"], "no ref given"),
        ([f"samples={tmp_path / 'nope.npz'}", f"ref={tmp_path / 'ref.npz'}"], "nope.npz not found"),
        (
            [f"samples={tmp_path / 'samples.npz'}", f"ref={tmp_path / 'ref.npz'}", "eval.metrics=[fidd]"],
            "unknown metric",
        ),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and err.count("\n") == 1
