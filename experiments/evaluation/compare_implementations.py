"""ditlab's FID (and sFID, IS, precision, recall) vs torchmetrics' vs torch-fidelity's on one
generated sample set, with the same Inception weights file in all three.

    python experiments/evaluation/compare_implementations.py SAMPLES.npz [WEIGHTS.pth] [--real N]

SAMPLES: a run's samples.npz (uint8 arr_0). The reference set is the first N bundled digits
(uint8 by DiT's rule), written as an ADM-layout batch and scored through ``ditlab-eval``'s
``evaluate()``. Without WEIGHTS (the real torch-fidelity file, which this machine cannot
download), a test-made Inception is used: torch-fidelity's architecture with random weights whose
BatchNorm statistics are calibrated on the reference images. The numbers then say how the
implementations agree, not what a published FID would be. Results go to results.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
PARTS = ("ditlab", "torchmetrics", "torchmetrics_antialias", "torch_fidelity")


def test_made_inception(path: Path, calibrate: np.ndarray) -> Path:
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    orig_url, orig_load = fe.load_state_dict_from_url, fe.FeatureExtractorInceptionV3.load_state_dict
    fe.load_state_dict_from_url = lambda *a, **k: {}
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url, fe.FeatureExtractorInceptionV3.load_state_dict = orig_url, orig_load
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for i in range(0, len(calibrate), 50):
            net(torch.from_numpy(calibrate[i : i + 50]).permute(0, 3, 1, 2).expand(-1, 3, -1, -1).contiguous())
    torch.save(net.state_dict(), path)
    return path


def rgb_nchw(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("samples")
    p.add_argument("weights", nargs="?")
    p.add_argument("--real", type=int, default=100)
    p.add_argument(
        "--only",
        choices=PARTS,
        nargs="*",
        default=list(PARTS),
        help="run these parts (separate processes can run them side by side); results merge",
    )
    args = p.parse_args()
    torch.set_num_threads(2)

    from ditlab.data.digits import load_digits_tensors
    from ditlab.samplers.generate import to_uint8

    with np.load(args.samples) as f:
        fake = f["arr_0"]
    side = fake.shape[1]
    real = to_uint8(load_digits_tensors(side)[0][: args.real])
    work = HERE / "work"
    work.mkdir(exist_ok=True)
    made = work / "test_made_inception.pth"
    weights = Path(args.weights) if args.weights else (made if made.is_file() else test_made_inception(made, real))
    np.savez(work / "ref.npz", arr_0=real)
    out: dict = {
        "num_fake": int(len(fake)),
        "num_real": int(len(real)),
        "resolution": int(side),
        "weights": "real torch-fidelity file" if args.weights else "test-made (random, BN calibrated)",
        "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
        + f", {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
    }

    # 1. ditlab-eval: one Inception pass per set for all metrics.
    from ditlab.config import compose
    from ditlab.tools.evaluate import evaluate

    if "ditlab" in args.only:
        t0 = time.time()
        cfg = compose(
            "evaluate",
            [
                f"samples={args.samples}",
                f"ref={work / 'ref.npz'}",
                "progress=false",
                f"eval.feature_extractor_weights_path={weights}",
                "eval.batch_size=50",
                f"eval.is_split_size={len(fake) // 10}",
                "eval.metrics=[fid,sfid,is,precision,recall]",
            ],
        )
        res = evaluate(cfg)
        out["ditlab"] = {k: res[k] for k in ("fid", "sfid", "is", "is_std", "precision", "recall")}
        out["ditlab"]["seconds"] = round(time.time() - t0, 1)

    # 2. torchmetrics FrechetInceptionDistance, the same weights, TF-like resize and its default antialias.
    from torchmetrics.image.fid import FrechetInceptionDistance

    for antialias in (False, True):
        if ("torchmetrics_antialias" if antialias else "torchmetrics") not in args.only:
            continue
        t0 = time.time()
        m = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights), antialias=antialias)
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, len(images), 50):
                m.update(rgb_nchw(images[i : i + 50]), real=is_real)
        out[f"torchmetrics_antialias_{antialias}"] = {"fid": float(m.compute()), "seconds": round(time.time() - t0, 1)}

    # 3. torch-fidelity's own pipeline (FID + IS), the same weights. Not its precision/recall: those use
    # VGG-16 features (not Inception pool features as ADM's evaluator), and calculate_metrics(prc=True)
    # hands the Inception weights path to VGG-16 too, which cannot load it.
    import torch_fidelity

    class Set(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return rgb_nchw(self.images[i : i + 1])[0]

    if "torch_fidelity" not in args.only:
        return finish(out)
    t0 = time.time()
    tf = torch_fidelity.calculate_metrics(
        input1=Set(fake),
        input2=Set(real),
        fid=True,
        isc=True,
        prc=False,
        cuda=False,
        verbose=False,
        feature_extractor_weights_path=str(weights),
        batch_size=50,
        isc_splits=10,
        samples_shuffle=False,  # split in sample order, as ADM's evaluator (and ditlab) do
        cache=False,
    )
    out["torch_fidelity"] = {
        "fid": tf["frechet_inception_distance"],
        "is": tf["inception_score_mean"],
        "is_std": tf["inception_score_std"],
        "seconds": round(time.time() - t0, 1),
    }
    finish(out)


def finish(out: dict) -> None:
    """Merge into results.json (parts run by other processes stay)."""
    path = HERE / "results.json"
    merged = {**(json.loads(path.read_text()) if path.is_file() else {}), **out}
    text = json.dumps(merged, indent=2)
    print(text)
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
