"""ditlab.config: the config location, compose() and in_multirun() in one module; the model presets."""

from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import ditlab.cli
from ditlab.config import CONFIG_DIR, compose, in_multirun
from ditlab.models.official import model_preset


def test_cli_compose_is_the_config_modules_compose():
    assert ditlab.cli.compose is compose and ditlab.cli.CONFIG_DIR == CONFIG_DIR


def test_compose_leaves_a_running_composition_untouched():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base=None, config_dir=CONFIG_DIR):
        assert compose("train", ["model=XL"]).model.name == "XL"
        assert GlobalHydra.instance().is_initialized()  # the caller's Hydra still composes
        assert hydra_compose("train", ["model=S"]).model.name == "S"
    assert not in_multirun()


def test_paper_sizes_share_a_base_that_is_not_a_cpu_preset():
    for size in ("S", "B", "L", "XL", "tiny", "small"):
        defaults = yaml.safe_load((Path(CONFIG_DIR) / "model" / f"{size}.yaml").read_text())["defaults"]
        assert defaults[0] == "base/dit@_here_", size
    base = yaml.safe_load((Path(CONFIG_DIR) / "model" / "base" / "dit.yaml").read_text())
    assert not {"name", "depth", "hidden_size", "num_heads"} & set(base)  # sizes are the presets' own
    xl = compose("train", ["model=XL"]).model
    assert (xl.name, xl.depth, xl.hidden_size, xl.num_heads, xl.patch_size) == ("XL", 28, 1152, 16, 2)


def test_model_preset_is_the_composed_group():
    for size in ("tiny", "XL"):
        composed = compose("train", [f"model={size}"]).model
        assert model_preset(size) == {k: composed[k] for k in model_preset(size)}
    assert model_preset("XL")["mlp_ratio"] == 4.0 and model_preset("XL")["depth"] == 28
