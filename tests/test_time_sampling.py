"""Training-time noise-level distributions (uniform | logit_normal) and the SD3 time shift, both objectives."""

import pytest
import torch
from conftest import compose_train

from ditlab.build import build_objective
from ditlab.errors import DitlabError
from ditlab.objectives.ddpm import DDPMObjective
from ditlab.objectives.flow import FlowObjective
from ditlab.objectives.time_sampling import shift_noise_level


def noise_level(objective, n=20_000):
    """Draws mapped back to the SD3 noise level τ (0 data, 1 noise) for either objective."""
    torch.manual_seed(0)
    if isinstance(objective, DDPMObjective):
        return (objective.sample_t(n).float() + 0.5) / objective.num_timesteps
    return 1 - objective.sample_t(n)


def test_defaults_keep_the_official_draws_bit_for_bit():
    torch.manual_seed(3)
    expected_ddpm, expected_flow = torch.randint(0, 1000, (7,)), torch.rand((7,))
    torch.manual_seed(3)
    assert torch.equal(DDPMObjective().sample_t(7), expected_ddpm)  # DiT's torch.randint
    assert torch.equal(FlowObjective().sample_t(7), expected_flow)  # SiT's torch.rand


@pytest.mark.parametrize("cls", [DDPMObjective, FlowObjective])
def test_logit_normal_concentrates_mid_range_and_its_mean_moves_toward_noise(cls):
    in_mid = lambda tau: ((tau > 0.25) & (tau < 0.75)).float().mean().item()  # noqa: E731
    uniform = noise_level(cls())
    centred = noise_level(cls(time_sampling="logit_normal"))
    noisy = noise_level(cls(time_sampling="logit_normal", logit_normal_mean=1.0))
    assert abs(in_mid(uniform) - 0.5) < 0.02 and in_mid(centred) > 0.65
    assert abs(centred.median().item() - 0.5) < 0.01
    assert noisy.median().item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.01)  # SD3 sign


@pytest.mark.parametrize("cls", [DDPMObjective, FlowObjective])
def test_time_shift_is_sd3s_map_on_the_noise_level(cls):
    assert shift_noise_level(torch.tensor([0.0, 0.5, 1.0]), 3.0).tolist() == [0.0, 0.75, 1.0]
    shifted = noise_level(cls(time_shift=3.0))
    # τ' = 3τ / (1 + 2τ) of uniform τ: the median moves from 1/2 to 3/4.
    assert shifted.median().item() == pytest.approx(0.75, abs=0.01)
    assert cls(time_shift=3.0, time_sampling="logit_normal").describe()["time_shift"] == 3.0


def test_ddpm_objective_trains_with_logit_normal_indices_in_range():
    objective = DDPMObjective(time_sampling="logit_normal", logit_normal_std=3.0, time_shift=2.0)
    t = objective.sample_t(10_000)
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999 and t.max() > 990
    assert objective.describe()["logit_normal"] == [0.0, 3.0]


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
@pytest.mark.parametrize(
    "override,message",
    [
        ("objective.time_sampling=beta", "unknown time sampling 'beta'; set objective.time_sampling"),
        ("objective.logit_normal_std=0", "objective.logit_normal_std must be positive"),
        ("objective.time_shift=-1", "objective.time_shift must be positive"),
    ],
)
def test_bad_time_options_are_one_line(objective, override, message):
    with pytest.raises(DitlabError, match=message):
        build_objective(compose_train(f"objective={objective}", override).objective)
