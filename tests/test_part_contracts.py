"""The sampler/objective contract: samplers read the noise level from the objective (one place) and
call the network only as ``model(x, t, y, noise_level=objective.noise_level(t))``."""

import pytest
import torch

from ditlab.errors import DitlabError
from ditlab.objectives.base import Objective
from ditlab.objectives.ddpm import DDPMObjective
from ditlab.objectives.flow import FlowObjective
from ditlab.samplers import SAMPLERS
from ditlab.samplers.base import check_steps


class Recorder:
    """Stands in for a GuidedModel: records (t, noise_level) and returns zeros of the right shape."""

    def __init__(self, out_channels):
        self.out_channels, self.calls = out_channels, []

    def __call__(self, x, t, y, noise_level):
        self.calls.append((t.clone(), noise_level))
        return torch.zeros(x.shape[0], self.out_channels, *x.shape[2:])


def test_noise_level_runs_from_data_to_noise_for_both_families():
    ddpm, flow = DDPMObjective(num_timesteps=100), FlowObjective()
    assert (ddpm.noise_level(0), ddpm.noise_level(99), ddpm.noise_level(torch.tensor(33))) == (0.0, 1.0, 1 / 3)
    assert (flow.noise_level(0.0), flow.noise_level(torch.tensor(1.0)), flow.noise_level(0.25)) == (1.0, 0.0, 0.75)
    assert Objective.diffusion is None  # declared on the base; family "ddpm" sets it
    with pytest.raises(NotImplementedError):
        Objective().noise_level(0.5)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm_solver", "euler", "heun"])
def test_every_sampler_passes_the_objectives_noise_level(name):
    sampler = SAMPLERS.get(name)(steps=3)
    objective = FlowObjective() if "flow" in sampler.families else DDPMObjective(num_timesteps=50)
    sampler.check(objective)
    model = Recorder(objective.out_channels(1))
    sampler.sample(model, objective, torch.randn(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), torch.Generator())
    assert len(model.calls) == sampler.model_calls()
    for t, level in model.calls:
        assert level == objective.noise_level(t[0]) and 0.0 <= level <= 1.0


def test_the_steps_check_is_one_function():
    check_steps(50, DDPMObjective(num_timesteps=50))
    with pytest.raises(
        DitlabError,
        match=r"^sampler.steps=51 exceeds the 50 steps the model was trained with; "
        r"set sampler.steps <= 50$",
    ):
        check_steps(51, DDPMObjective(num_timesteps=50))


def test_flow_paths_are_registry_entries_with_options():
    from ditlab.objectives.paths import PATHS, VPPath, build_path

    assert PATHS.names() == ["gvp", "linear", "vp"]
    vp = build_path("vp", options={"sigma_min": 0.2, "sigma_max": 10.0})
    assert isinstance(vp, VPPath) and (vp.sigma_min, vp.sigma_max) == (0.2, 10.0)
    assert FlowObjective(path="vp", path_options={"sigma_max": 10.0}).describe()["path_options"] == {"sigma_max": 10.0}
    assert "path_options" not in FlowObjective().describe()  # unchanged for the built-in defaults
    with pytest.raises(
        DitlabError,
        match=r"unknown flow path 'nope'; registered: gvp, linear, vp\. Choose one with objective.path=<name>, "
        r"or register your own .* objective.path.module$",  # the spelling docs/extending.md shows
    ):
        build_path("nope")
    with pytest.raises(DitlabError, match=r"bad options for flow path 'linear' \(objective.path_options\)"):
        build_path("linear", options={"power": 2})
    with pytest.raises(DitlabError, match=r"cannot import plugin module 'no_such' \(set by objective.path_module\)"):
        build_path("linear", module="no_such")


def test_a_flow_path_is_named_as_every_other_part():
    # objective.path: {name:, module:, options}: the convention of every group; the older path_module /
    # path_options spelling builds the same path and records the same summary.
    from ditlab.objectives.paths import VPPath, build_path

    vp = build_path({"name": "VP", "sigma_max": 10.0})
    assert isinstance(vp, VPPath) and vp.sigma_max == 10.0 and vp.name == "vp"
    new = FlowObjective(path={"name": "vp", "sigma_max": 10.0}).describe()
    assert new == FlowObjective(path="vp", path_options={"sigma_max": 10.0}).describe()
    with pytest.raises(DitlabError, match=r"bad options for flow path 'vp' \(objective.path.\*\)"):
        build_path({"name": "vp", "power": 2})
    with pytest.raises(DitlabError, match=r"cannot import plugin module 'no_such' \(set by objective.path.module\)"):
        build_path({"name": "vp", "module": "no_such"})
    with pytest.raises(DitlabError, match="drop objective.path_module/path_options"):
        build_path({"name": "vp"}, options={"sigma_max": 10.0})


def test_every_part_is_built_by_one_function_with_one_error_line():
    from ditlab.registry import Registry

    parts: Registry = Registry("widget", "widget")

    @parts.register("w")
    class Widget:
        def __init__(self, model, size=1):
            self.model, self.size = model, size

    w = parts.build({"name": "w", "size": 3}, model="m")  # the user's options + ditlab's context
    assert (w.model, w.size) == ("m", 3)
    assert parts.build("w", "m").size == 1  # a bare name, context passed positionally
    with pytest.raises(DitlabError, match=r"^bad options for widget 'w' \(widget\.\*\): .*colour"):
        parts.build({"name": "w", "colour": "red"}, model="m")
    with pytest.raises(DitlabError, match=r"unknown widget 'v'; registered: w\. .* widget.module$"):
        parts.build("v")
