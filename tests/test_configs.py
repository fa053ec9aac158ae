"""Every option of every config group composes with the real configs, and builds where it can on CPU."""

from pathlib import Path

import lightning as L
import pytest
from conftest import compose_train
from hydra.errors import MissingConfigException
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import OmegaConf

from ditlab.build import build_data, build_encoder, build_model, build_objective, build_sampler
from ditlab.config import CONFIG_DIR

GROUPS = [
    "model",
    "block",
    "objective",
    "sampler",
    "data",
    "encoder",
    "trainer",
    "logger",
    "callbacks",
    "eval",
    "paths",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


ALL = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options_and_the_defaults_are_the_quickstart():
    assert all(options(g) for g in GROUPS)
    cfg = compose_train(fast=False)
    assert (
        cfg.model.name,
        cfg.model.patch_size,
        cfg.block.name,
        cfg.objective.name,
        cfg.data.name,
        cfg.encoder.name,
        list(cfg.logger),
    ) == ("tiny", 2, "adaln_zero", "ddpm", "digits", "identity", ["csv"])
    # The fastest sampler that kept quality in experiments/samplers; DDPM-250 by override.
    assert (cfg.sampler.name, cfg.sampler.steps, cfg.sampler.options.use_karras_sigmas) == ("dpm_solver", 10, True)
    assert compose_train("sampler=ddpm", fast=False).sampler.steps == 250


@pytest.mark.parametrize("group,option", ALL, ids=[f"{g}={o}" for g, o in ALL])
def test_every_option_composes(group, option):
    cfg = compose_train(f"{group}={option}", fast=False)
    OmegaConf.to_container(cfg, resolve=False)  # composes and is a plain tree
    if group in ("model", "block"):  # the backbone builds for every size (meta device: no memory) and design
        import torch

        objective = build_objective(cfg.objective)
        with torch.device("meta"):
            model = build_model(cfg.model, cfg.block, 4, 32, objective.out_channels(4), 1000)
        assert model.num_tokens == (32 // cfg.model.patch_size) ** 2
    elif group == "objective":
        assert build_objective(cfg.objective).family == cfg.objective.name
    elif group == "sampler":
        assert build_sampler(cfg.sampler).name == option.removesuffix("_karras")
    elif group == "data" and option == "digits":
        assert build_data(cfg.data).num_classes == 10
    elif group == "encoder" and option == "identity":
        assert build_encoder(cfg.encoder).latent_shape(1, 8) == (1, 8)
    elif group == "trainer":
        kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
        assert kwargs["strategy"] in ("auto", *StrategyRegistry.available_strategies())
        if kwargs["accelerator"] == "cpu":  # GPU presets cannot be instantiated without a GPU
            L.Trainer(**kwargs, logger=False, enable_checkpointing=False)


def test_unknown_options_and_keys_fail_before_any_work():
    with pytest.raises(MissingConfigException, match="model/nope"):
        compose_train("model=nope")
    with pytest.raises(Exception, match="max_stepz"):
        compose_train("trainer.max_stepz=3")
