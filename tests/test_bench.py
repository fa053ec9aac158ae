"""`make bench` (python -m ditlab.tools.bench): the latent-cache benchmark end to end at toy size."""

import json

import pytest

from ditlab.tools.bench import main


def test_latent_cache_benchmark_measures_both_loops_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--only", "latent_cache", "--out", str(out), "--resolution", "32", "--batch-size", "2", "--images", "2",
            "--steps", "1", "--models", "tiny"]
    main(args)
    result = json.loads(out.read_text())
    tiny = result["models"]["DiT-tiny/2"]
    assert tiny["raw"]["data"] == "imagefolder" and tiny["cached"]["data"] == "latents"
    assert tiny["raw"]["model"] == tiny["cached"]["model"] == "DiT-tiny/2"
    assert tiny["raw"]["timed_steps"] == tiny["cached"]["timed_steps"] == 1
    assert result["ratio_cached_over_raw"]["DiT-tiny/2"] == tiny["ratio_cached_over_raw"] == pytest.approx(
        tiny["cached"]["images_per_second"] / tiny["raw"]["images_per_second"], abs=0.01)
    assert result["vae_encoder_gmacs_per_image"] > 0 and set(result["projected_ratio_compute_bound"]) == {
        "DiT-tiny/2", "DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2"}
    assert result["command"].startswith("python -m ditlab.tools.bench --only latent_cache")
    with pytest.raises(SystemExit) as exit_info:  # an existing result is kept
        main(args)
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
