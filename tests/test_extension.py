"""Every kind of part is added from outside the package by one Python file + one YAML file.

Each case is what a user writes (docs/extending.md shows the same examples): a module in their own
folder that registers the part, and a YAML option in their own config folder naming it (``name:``)
and its module (``module:``; a flow path's inside ``objective.path``). The test adds the folder with
``hydra.searchpath``, composes the real ``train`` config with the user's option, trains a few
steps and samples, and checks that the part was really used.

To cover another kind of part, append a :class:`Part` to ``PARTS``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train

from ditlab.data import DATASETS
from ditlab.encoders import ENCODERS
from ditlab.metrics.definitions import METRICS
from ditlab.metrics.extractors import EXTRACTORS
from ditlab.models.blocks import BLOCKS
from ditlab.objectives import OBJECTIVES
from ditlab.objectives.paths import PATHS
from ditlab.optim import OPTIMIZERS, SCHEDULES
from ditlab.samplers import SAMPLERS
from ditlab.training.loggers import LOGGERS
from ditlab.training.train import train

REGISTRIES = (
    BLOCKS,
    OBJECTIVES,
    PATHS,
    SAMPLERS,
    ENCODERS,
    DATASETS,
    LOGGERS,
    METRICS,
    EXTRACTORS,
    OPTIMIZERS,
    SCHEDULES,
)


@dataclass
class Part:
    kind: str  # the test id
    module: str  # the user's Python file (without .py), importable from their plugin folder
    code: str
    yaml_path: str  # the user's YAML option, relative to their config folder: <group>/<option>.yaml
    yaml: str
    check: Callable[[dict, Path], None]  # (summary.json, run dir): asserts the part was used
    overrides: tuple[str, ...] = field(default=())

    @property
    def selection(self) -> str:
        group, option = self.yaml_path[: -len(".yaml")].rsplit("/", 1)
        return f"{group}={option}"


# ----------------------------------------------------------------------------------------------- parts


def check_block(s, run):
    assert s["block"] == "ext_gated"
    assert s["gflops_closed_form"] == pytest.approx(s["gflops"], rel=1e-9)


BLOCK = Part(
    kind="block",
    module="ext_block",
    code='''
        import torch.nn as nn
        from ditlab.models.blocks import BLOCKS, DiTBlock

        @BLOCKS.register("ext_gated")
        class GatedBlock(DiTBlock):
            """Pre-LN ViT block whose two residual branches are scaled by a gate regressed from t + y."""

            def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, attn_backend="sdpa", gate_init=0.0):
                super().__init__(hidden_size, num_heads, mlp_ratio, attn_backend)
                self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
                self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
                self.gate = nn.Linear(hidden_size, 2)
                self.gate_init = gate_init

            def initialize(self):
                nn.init.zeros_(self.gate.weight)
                nn.init.constant_(self.gate.bias, self.gate_init)

            def forward(self, x, cond):
                g_attn, g_mlp = self.gate(cond.c).unsqueeze(1).unbind(-1)
                x = x + g_attn.unsqueeze(-1) * self.attn(self.norm1(x))
                return x + g_mlp.unsqueeze(-1) * self.mlp(self.norm2(x))

            def macs(self, seq_len):  # closed-form count: shared attention + MLP, plus the gate Linear
                return self.attn_mlp_macs(seq_len) + self.gate.in_features * self.gate.out_features
    ''',
    yaml_path="block/gated.yaml",
    yaml="name: ext_gated\nmodule: ext_block\ngate_init: 0.5\n",
    check=check_block,
)


def check_objective(s, run):
    assert s["objective"] == {
        "name": "ext_ddpm_x0",
        "family": "ddpm",
        "num_timesteps": 100,
        "schedule": "cosine",
        "prediction": "x0",
        "var_type": "fixed_small",
        "loss_scale": 0.5,
    }
    assert s["sampling"]["sampler"] == "dpm_solver"  # the default sampler drives the user objective too


OBJECTIVE = Part(
    kind="objective",
    module="ext_objective",
    code='''
        from ditlab.objectives import OBJECTIVES
        from ditlab.objectives.ddpm import DDPMObjective

        @OBJECTIVES.register("ext_ddpm_x0")
        class X0DDPM(DDPMObjective):
            """DDPM that predicts x0 with fixed variance and down-weights the loss (a ddpm-family objective:
            every ddpm sampler drives it through the contract on ditlab.objectives.base.Objective)."""

            name = "ext_ddpm_x0"

            def __init__(self, num_timesteps=1000, loss_scale=1.0):
                super().__init__(num_timesteps, "cosine", "x0", "fixed_small")
                self.loss_scale = loss_scale

            def loss_at(self, model_fn, x0, t, noise, model_kwargs):
                terms = super().loss_at(model_fn, x0, t, noise, model_kwargs)
                return {**terms, "loss": self.loss_scale * terms["loss"]}

            def describe(self):
                return {**super().describe(), "loss_scale": self.loss_scale}
    ''',
    yaml_path="objective/x0.yaml",
    yaml="name: ext_ddpm_x0\nmodule: ext_objective\nnum_timesteps: 100\nloss_scale: 0.5\n",
    check=check_objective,
)


def check_flow_path(s, run):
    assert s["objective"]["path"] == "ext_power"
    assert s["objective"]["path_options"] == {"power": 3.0}
    assert s["sampling"]["sampler"] == "euler"


PATH = Part(
    kind="flow_path",
    module="ext_path",
    code='''
        import torch
        from ditlab.objectives.paths import PATHS, Path

        @PATHS.register("ext_power")
        class PowerPath(Path):
            """x_t = t·data + (1 − t)^power·noise: noise leaves faster than data arrives."""

            def __init__(self, power=2.0):
                self.power = power

            def alpha(self, t):
                return t, torch.ones_like(t)

            def sigma(self, t):
                return (1 - t) ** self.power, -self.power * (1 - t) ** (self.power - 1)
    ''',
    yaml_path="objective/flow_power.yaml",
    yaml=textwrap.dedent("""\
        defaults:
          - flow
          - _self_
        path: {name: ext_power, module: ext_path, power: 3.0}
    """),
    check=check_flow_path,
)


def check_sampler(s, run):
    assert s["sampling"]["sampler"] == "ext_midpoint"
    assert s["sampling"]["model_calls"] == 2 * s["sampling"]["steps"] == 8  # the tests' sampler.steps=4
    assert s["sampling"]["nfe"] == 16  # classifier-free guidance doubles every call


SAMPLER = Part(
    kind="sampler",
    module="ext_sampler",
    code='''
        from ditlab.samplers import SAMPLERS
        from ditlab.samplers.base import Sampler

        @SAMPLERS.register("ext_midpoint")
        class MidpointSampler(Sampler):
            """Explicit midpoint rule on the flow ODE, written against the documented contract only:
            objective.interval / velocity / noise_level and model(x, t, y, noise_level=...)."""

            name = "ext_midpoint"
            families = ("flow",)

            def model_calls(self):
                return 2 * self.steps

            def sample(self, model, objective, x_T, y, generator):
                t0, t1 = objective.interval(eval=True)
                dt = (t1 - t0) / self.steps
                x = x_T
                for i in range(self.steps):
                    t = t0 + i * dt
                    x_mid = x + dt / 2 * self.velocity(model, objective, x, t, y)
                    x = x + dt * self.velocity(model, objective, x_mid, t + dt / 2, y)
                return x

            @staticmethod
            def velocity(model, objective, x, t, y):
                t_batch = x.new_full((x.shape[0],), t)
                return objective.velocity(model(x, t_batch, y, noise_level=objective.noise_level(t)), x, t_batch)
    ''',
    yaml_path="sampler/midpoint.yaml",
    yaml="name: ext_midpoint\nmodule: ext_sampler\nsteps: 3\n",
    overrides=("objective=flow",),
    check=check_sampler,
)


def check_encoder(s, run):
    assert s["encoder"] == {"name": "ext_space_to_depth", "factor": 2}
    assert s["tokens"] == 4  # (8 / 2 / 2)²
    assert np.load(run / "samples.npz")["arr_0"].shape[1:] == (8, 8, 1)  # decoded back to pixels


ENCODER = Part(
    kind="encoder",
    module="ext_encoder",
    code='''
        import torch
        import torch.nn.functional as F
        from ditlab.encoders import ENCODERS, LatentEncoder

        @ENCODERS.register("ext_space_to_depth")
        class SpaceToDepth(LatentEncoder):
            """Lossless 'latent space': every factor x factor block of pixels becomes factor² channels."""

            name = "ext_space_to_depth"

            def __init__(self, factor=2):
                super().__init__()
                self.factor = factor

            def latent_shape(self, channels, resolution):
                return channels * self.factor**2, resolution // self.factor

            @torch.no_grad()
            def encode(self, x, generator=None):
                return F.pixel_unshuffle(x, self.factor)

            @torch.no_grad()
            def decode(self, z):
                return F.pixel_shuffle(z, self.factor)

            def describe(self):
                return {"name": self.name, "factor": self.factor}
    ''',
    yaml_path="encoder/s2d.yaml",
    yaml="name: ext_space_to_depth\nmodule: ext_encoder\nfactor: 2\n",
    overrides=("model.patch_size=2",),
    check=check_encoder,
)


def check_dataset(s, run):
    assert s["data"]["name"] == "ext_bars"
    assert s["data"]["num_classes"] == 4
    assert sorted(set(np.load(run / "samples.npz")["arr_1"].tolist())) == [0, 1, 2, 3]


DATASET = Part(
    kind="dataset",
    module="ext_dataset",
    code='''
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from ditlab.data import DATASETS, ImageDataModule

        @DATASETS.register("ext_bars")
        class BarsDataModule(ImageDataModule):
            """Class k: a bright horizontal bar on row k of a dark image, with a little noise."""

            name = "ext_bars"
            channels = 1

            def __init__(self, num_classes=4, resolution=8, size=256, batch_size=16, num_workers=0):
                super().__init__(batch_size, num_workers)
                self.num_classes, self.resolution, self.size = num_classes, resolution, size

            def setup(self, stage=None):
                g = torch.Generator().manual_seed(0)
                y = torch.arange(self.size) % self.num_classes
                x = torch.full((self.size, 1, self.resolution, self.resolution), -1.0)
                x[torch.arange(self.size), 0, y] = 1.0
                self.dataset = TensorDataset((x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1), y)

            def train_dataloader(self):
                return DataLoader(self.dataset, batch_size=self.per_device_batch_size(), shuffle=True, drop_last=True)
    ''',
    yaml_path="data/bars.yaml",
    yaml="name: ext_bars\nmodule: ext_dataset\nnum_classes: 4\nresolution: 8\nbatch_size: 16\n",
    check=check_dataset,
)


def check_logger(s, run):
    lines = [json.loads(x) for x in (run / "ext_metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in x for x in lines)
    assert not (run / "metrics.csv").exists()  # logger=ext_jsonl alone replaced the default csv


LOGGER = Part(
    kind="logger",
    module="ext_loggers",
    code="""
        import json

        from lightning.pytorch.loggers import Logger

        from ditlab.training.loggers import LOGGERS


        class JsonLinesLogger(Logger):
            name, version = "jsonl", 0

            def __init__(self, path):
                super().__init__()
                self.path = path

            def log_metrics(self, metrics, step=None):
                with open(self.path, "a") as f:
                    f.write(json.dumps({"step": step, **metrics}) + "\\n")

            def log_hyperparams(self, params, *args, **kwargs):
                pass


        @LOGGERS.register("ext_jsonl")
        def build(cfg, run_dir, full_cfg):  # the logger group's entry point: (its YAML, run dir, whole config)
            return JsonLinesLogger(run_dir / cfg.file)
    """,
    yaml_path="logger/ext_jsonl.yaml",
    yaml="# @package logger.ext_jsonl\nname: ext_jsonl\nmodule: ext_loggers\nfile: ext_metrics.jsonl\n",
    check=check_logger,
)


def check_metric(s, run):
    rows = [json.loads(x) for x in (run / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert 0.1 <= rows[-1]["ext_confidence"] <= 1 and s["metrics"]["ext_confidence"] == rows[-1]["ext_confidence"]
    assert s["metrics_lower_is_better"] == {"ext_confidence": False}


METRIC = Part(  # a metric on a built-in extractor's output (the digits classifier's logits)
    kind="metric",
    module="ext_metrics",
    code="""
        from ditlab.metrics.definitions import METRICS, MetricSpec


        def confidence(fake, real, opts):  # fake: FakeFeatures(features, labels) in sample order
            return float(fake.features.softmax(1).max(1).values.mean())


        METRICS.register("ext_confidence")(MetricSpec(
            "custom", "digits", "logits", fake="features", real=None, lower_is_better=False, compute=confidence))
    """,
    yaml_path="eval/ext_confidence.yaml",
    yaml="defaults: [base, _self_]\nmodules: [ext_metrics]\nmetrics: [ext_confidence]\n",
    check=check_metric,
    overrides=("eval.metrics=[ext_confidence]", "eval.num_samples=20", "eval.batch_size=20"),
)


def check_extractor(s, run):
    assert s["metrics"]["fd_pixels"] > 0
    assert s["metrics_recipe"]["reference"]["pixel_stats"]["extractor"] == {"name": "pixel_stats"}


EXTRACTOR = Part(  # a feature extractor and a Fréchet distance in its feature space
    kind="extractor",
    module="ext_extractors",
    code="""
        import torch
        import torch.nn as nn

        from ditlab.metrics.definitions import METRICS, MetricSpec
        from ditlab.metrics.extractors import EXTRACTORS, Extractor
        from ditlab.metrics.frechet import frechet_between


        class PixelStats(nn.Module):
            def forward(self, x):  # uint8 (N, C, H, W) -> {output name: (N, d)}
                x = x.float() / 255
                return {"stats": torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x.amax((1, 2, 3))], 1)}


        @EXTRACTORS.register("pixel_stats")
        def build(data, eval_cfg, cache_dir):
            return Extractor("pixel_stats", PixelStats(), {"stats": 3}, rgb=False, identity={"name": "pixel_stats"})


        METRICS.register("fd_pixels")(MetricSpec(
            "frechet", "pixel_stats", "stats", fake="moments", real="moments", lower_is_better=True,
            compute=lambda fake, real, opts: frechet_between(fake, real)))
    """,
    yaml_path="eval/ext_pixels.yaml",
    yaml="defaults: [base, _self_]\nmodules: [ext_extractors]\nmetrics: [fd_pixels]\n",
    check=check_extractor,
    overrides=("eval.metrics=[fd_pixels]", "eval.num_samples=20", "eval.batch_size=20"),
)


def check_optimizer(s, run):
    assert s["optim"]["optim"] == {"name": "ext_sgd", "module": "ext_optim", "lr": 0.01, "momentum": 0.8}
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    assert state["param_groups"][0]["momentum"] == 0.8
    assert all("momentum_buffer" in v for v in state["state"].values())  # SGD's state, not AdamW's


OPTIMIZER = Part(
    kind="optimizer",
    module="ext_optim",
    code="""
        import torch

        from ditlab.optim import OPTIMIZERS


        @OPTIMIZERS.register("ext_sgd")
        def sgd(named_params, lr, momentum=0.9):
            return torch.optim.SGD([p for _, p in named_params], lr=lr, momentum=momentum)
    """,
    yaml_path="optim/sgd.yaml",
    yaml="name: ext_sgd\nmodule: ext_optim\nlr: 0.01\nmomentum: 0.8\n",
    check=check_optimizer,
)


def check_schedule(s, run):
    assert s["optim"]["lr_schedule"] == {"name": "ext_halving", "module": "ext_schedule", "every": 2}
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(s["optim"]["optim"]["lr"] / 4)


SCHEDULE = Part(
    kind="lr_schedule",
    module="ext_schedule",
    code="""
        from ditlab.optim import SCHEDULES, Schedule


        @SCHEDULES.register("ext_halving")
        class Halving(Schedule):
            name = "ext_halving"

            def __init__(self, every):
                super().__init__(0)
                self.every = every

            def after_warmup(self, step):
                return 0.5 ** (step // self.every)
    """,
    yaml_path="lr_schedule/halving.yaml",
    yaml="name: ext_halving\nmodule: ext_schedule\nevery: 2\n",
    check=check_schedule,
)

PARTS = [BLOCK, OBJECTIVE, PATH, SAMPLER, ENCODER, DATASET, LOGGER, METRIC, EXTRACTOR, OPTIMIZER, SCHEDULE]


# ------------------------------------------------------------------------------------------------ test


@pytest.fixture
def user_folders(tmp_path, monkeypatch):
    """The user's plugin folder (on sys.path, as PYTHONPATH would put it) and config folder; every
    registry and imported plugin module is restored afterwards."""
    plugins, conf = tmp_path / "plugins", tmp_path / "conf"
    plugins.mkdir()
    monkeypatch.syspath_prepend(str(plugins))
    saved = [dict(r._entries) for r in REGISTRIES]
    yield plugins, conf
    for registry, entries in zip(REGISTRIES, saved):
        registry._entries.clear()
        registry._entries.update(entries)
    for name in [m for m in sys.modules if m.startswith("ext_")]:
        del sys.modules[name]


@pytest.mark.parametrize("part", PARTS, ids=[p.kind for p in PARTS])
def test_a_part_added_from_outside_the_package_trains_and_samples(part, user_folders, tmp_path):
    plugins, conf = user_folders
    (plugins / f"{part.module}.py").write_text(textwrap.dedent(part.code))
    (conf / part.yaml_path).parent.mkdir(parents=True)
    (conf / part.yaml_path).write_text(part.yaml)
    assert part.module not in sys.modules  # imported only because the YAML names it
    run = tmp_path / "run"
    cfg = compose_train(f"hydra.searchpath=[file://{conf}]", *part.overrides, part.selection, output_dir=run)
    summary = train(cfg)
    assert summary["status"] == "finished" and np.isfinite(summary["final_loss"])
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    part.check(summary, run)
