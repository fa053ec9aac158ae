"""`make bench` (python -m ditlab.tools.bench): the latent-cache benchmark end to end at toy size."""

import json

import pytest

from ditlab.tools.bench import main


def test_latent_cache_benchmark_measures_both_loops_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [
        "--only",
        "latent_cache",
        "--out",
        str(out),
        "--resolution",
        "32",
        "--batch-size",
        "2",
        "--images",
        "2",
        "--steps",
        "1",
        "--models",
        "tiny",
    ]
    main(args)
    result = json.loads(out.read_text())
    tiny = result["models"]["DiT-tiny/2"]
    assert tiny["raw"]["data"] == "imagefolder" and tiny["cached"]["data"] == "latents"
    assert tiny["raw"]["model"] == tiny["cached"]["model"] == "DiT-tiny/2"
    assert tiny["raw"]["timed_steps"] == tiny["cached"]["timed_steps"] == 1
    assert (
        result["ratio_cached_over_raw"]["DiT-tiny/2"]
        == tiny["ratio_cached_over_raw"]
        == pytest.approx(tiny["cached"]["images_per_second"] / tiny["raw"]["images_per_second"], abs=0.01)
    )
    assert result["vae_encoder_gmacs_per_image"] > 0 and set(result["projected_ratio_compute_bound"]) == {
        "DiT-tiny/2",
        "DiT-S/2",
        "DiT-B/2",
        "DiT-L/2",
        "DiT-XL/2",
    }
    assert result["command"].startswith("python -m ditlab.tools.bench --only latent_cache")
    with pytest.raises(SystemExit) as exit_info:  # an existing result is kept
        main(args)
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_step_overhead_benchmark_pairs_ditlab_steps_with_plain_steps(tmp_path):
    out = tmp_path / "step.json"
    main(
        [
            "--only",
            "step_overhead",
            "--out",
            str(out),
            "--sizes",
            "probe",
            "--variants",
            "default",
            "--repeats",
            "1",
            "--step-warmup",
            "1",
            "--step-count",
            "3",
            "--threads",
            "1",
        ]
    )
    result = json.loads(out.read_text())
    probe = result["results"]["probe"]["default"]
    (fit,) = probe["repeats"]
    assert fit["model"] == "DiT-tiny/2" and fit["batch"] == 8 and fit["timed_steps"] == 3
    steps = fit["median_step_ms"]
    assert steps["plain"] > 0 and steps["ditlab"] > 0
    assert fit["ratio"] == pytest.approx(steps["plain"] / steps["ditlab"], rel=0.01)
    assert result["ratio_ditlab_over_plain"] == {"DiT-tiny/2 batch 8": probe["ratio_median"]}
    assert result["torch_threads"] == 1 and result["target"] == 0.97
    assert result["command"].startswith("python -m ditlab.tools.bench --only step_overhead")
