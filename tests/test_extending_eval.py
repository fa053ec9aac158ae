"""A user adds a feature extractor and two metrics with one Python file and one YAML, outside the
package (a module on their path, a config directory on hydra.searchpath), with no edit inside
ditlab; ``ditlab-eval`` and training's eval callback both pick them up."""

import json
import textwrap

import numpy as np

from ditlab.config import compose

PLUGIN = """
import torch
import torch.nn as nn
from ditlab.metrics.definitions import METRICS, MetricSpec
from ditlab.metrics.extractors import EXTRACTORS, Extractor
from ditlab.metrics.frechet import frechet_between


class ChannelStats(nn.Module):
    def forward(self, x):  # uint8 (N, C, H, W) -> per-channel mean and std in [0, 1]
        x = x.float() / 255
        return {"stats": torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)}


@EXTRACTORS.register("channel_stats")
def build(data, eval_cfg, cache_dir):
    return Extractor("channel_stats", ChannelStats(), {"stats": 6}, rgb=True, identity={"name": "channel_stats"})


METRICS.register("fd_channels")(MetricSpec("frechet", "channel_stats", "stats", "moments", "moments", True,
                                           lambda fake, real, opts: frechet_between(fake, real)))
METRICS.register("brightness")(MetricSpec("custom", "channel_stats", "stats", "features", None, False,
                                          lambda fake, real, opts: float(fake.features[:, :3].mean())))
"""

YAML = """
defaults:
  - base
  - _self_
modules: [my_eval_parts]
metrics: [fd_channels, brightness]
batch_size: 16
"""


def test_a_metric_and_an_extractor_added_by_one_file_and_one_yaml(tmp_path, monkeypatch, capsys):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_eval_parts.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "conf" / "eval").mkdir(parents=True)
    (tmp_path / "conf" / "eval" / "channels.yaml").write_text(YAML)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", arr_0=rng.integers(0, 255, (40, 4, 4, 3), dtype=np.uint8))
    np.savez(tmp_path / "samples.npz", arr_0=rng.integers(0, 128, (30, 4, 4, 3), dtype=np.uint8))
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"

    from ditlab.tools.evaluate import evaluate

    cfg = compose(
        "evaluate",
        [
            search,
            "eval=channels",
            f"samples={tmp_path / 'samples.npz'}",
            f"ref={tmp_path / 'ref.npz'}",
            "progress=false",
        ],
    )
    result = evaluate(cfg)
    assert result["fd_channels"] > 0.01 and 0.1 < result["brightness"] < 0.4  # samples are darker
    assert result["extractors"] == {"channel_stats": {"name": "channel_stats"}}
    assert json.loads(capsys.readouterr().out)["brightness"] == result["brightness"]

    # The same YAML composes into training; the eval callback imports the module and checks the names.
    from ditlab.build import build_data, build_objective, build_sampler
    from ditlab.training.eval_callback import build_eval_callback

    train_cfg = compose("train", [search, "eval=channels", "paths.output_dir=unused"])
    callback = build_eval_callback(
        train_cfg,
        data=build_data(train_cfg.data),
        sampler=build_sampler(train_cfg.sampler),
        objective=build_objective(train_cfg.objective),
        run_dir=tmp_path / "run",
    )
    assert callback.names == ["fd_channels", "brightness"]


def test_ditlab_eval_under_torchrun_gives_one_process_numbers_in_sample_order(tmp_path, monkeypatch):
    """2 gloo processes, each extracting every other image (samples and reference): the same values
    as one process, including a metric that reads the first sample (the set is re-ordered)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from ditlab.tools.evaluate import evaluate

    plugin = (
        textwrap.dedent(PLUGIN)
        .replace("channel_stats", "channel_stats_ddp")
        .replace('"fd_channels"', '"fd_channels_ddp"')
        .replace('"brightness"', '"brightness_ddp"')
    )
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_eval_parts_ddp.py").write_text(
        plugin
        + textwrap.dedent("""
        METRICS.register("first_brightness")(MetricSpec("custom", "channel_stats_ddp", "stats", "features", None,
                                                        False, lambda fake, real, opts: float(fake.features[0, :3].mean())))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "ref.npz", arr_0=rng.integers(0, 255, (41, 4, 4, 3), dtype=np.uint8))
    samples = rng.integers(0, 200, (33, 4, 4, 3), dtype=np.uint8)
    samples[0] = 255  # the first sample is the only white one
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    args = [
        f"samples={tmp_path / 'samples.npz'}",
        f"ref={tmp_path / 'ref.npz'}",
        "eval.modules=[my_eval_parts_ddp]",
        "eval.metrics=[fd_channels_ddp,first_brightness]",
        "eval.batch_size=4",
        "progress=false",
    ]
    one = evaluate(compose("evaluate", args))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(tmp_path / "plugins")]), "OMP_NUM_THREADS": "1"}
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
    ]
    res = subprocess.run(
        [*launcher, "-m", "ditlab.tools.evaluate", *args, f"out={tmp_path / 'out.json'}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert one["first_brightness"] == two["first_brightness"] == 1.0
    assert two["fd_channels_ddp"] == pytest.approx(one["fd_channels_ddp"], rel=1e-9) and one["fd_channels_ddp"] > 0
