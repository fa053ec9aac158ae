"""Every sampler on an analytic model, NFE accounting, and the refusals of bad sampler input.

For data x ~ N(μ, τ²) the optimal ε / velocity / noise / score predictions are closed-form, and
the probability-flow ODE maps noise z to exactly μ + τ·z. Deterministic samplers must approach
that map as they take more steps (at their order); ancestral DDPM must reproduce N(μ, τ²).
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

from ditlab.errors import DitlabError
from ditlab.objectives.ddpm import DDPMObjective
from ditlab.objectives.flow import FlowObjective
from ditlab.objectives.gaussian import _extract
from ditlab.objectives.paths import expand_t_like_x
from ditlab.samplers import SAMPLERS
from ditlab.samplers.ddpm import DDIMSampler, DDPMSampler
from ditlab.samplers.diffusers_sampler import DiffusersSampler, DPMSolverSampler
from ditlab.samplers.flow import EulerSampler, HeunSampler
from ditlab.samplers.guidance import GuidedModel

MU, TAU = 0.5, 0.3


class GaussianEps(nn.Module):
    """E[ε | x_t] for N(μ, τ²) data; a zero variance half when the objective learns Σ."""

    def __init__(self, objective):
        super().__init__()
        self.objective = objective
        self.timesteps = []

    def forward(self, x, t, y):
        self.timesteps.append(t.clone())
        d = self.objective.diffusion
        a = _extract(d.sqrt_alphas_cumprod, t, x.shape)
        s = _extract(d.sqrt_one_minus_alphas_cumprod, t, x.shape)
        eps = s * (x - a * MU) / (a * a * TAU**2 + s * s)
        return torch.cat([eps, torch.zeros_like(eps)], 1) if d.var_type == "learned_range" else eps


class GaussianFlow(nn.Module):
    """The optimal velocity / noise / score of a flow objective for N(μ, τ²) data."""

    def __init__(self, objective):
        super().__init__()
        self.objective = objective

    def forward(self, x, t, y):
        tb = expand_t_like_x(t, x)
        (a, da), (s, ds) = self.objective.path.alpha(tb), self.objective.path.sigma(tb)
        var = a * a * TAU**2 + s * s
        data = MU + a * TAU**2 * (x - a * MU) / var
        noise = s * (x - a * MU) / var
        return {"velocity": da * data + ds * noise, "noise": noise, "score": -noise / s}[self.objective.prediction]


def run(sampler, objective, n=500, channels=1, seed=0):
    z = torch.randn(n, channels, 2, 2, generator=torch.Generator().manual_seed(seed))
    net = GaussianEps(objective) if objective.family == "ddpm" else GaussianFlow(objective)
    guided = GuidedModel(net, pred_channels=channels, null_label=0)
    x = sampler.sample(guided, objective, z, torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(1))
    return x, (x - (MU + TAU * z)).abs().mean().item(), guided, net


@pytest.mark.parametrize("var_type", ["fixed_small", "learned_range"])
def test_deterministic_ddpm_family_samplers_converge_to_the_flow_map(var_type):
    objective = DDPMObjective(var_type=var_type)
    ddim = {n: run(DDIMSampler(steps=n), objective)[1] for n in (25, 100)}
    dpm = {n: run(DPMSolverSampler(steps=n), objective)[1] for n in (25, 100)}
    assert ddim[100] < 0.015 and dpm[100] < 0.003
    assert dpm[25] < 0.7 * ddim[25] and dpm[100] < 0.2 * ddim[100]  # 2nd order beats 1st order
    assert ddim[100] < 0.4 * ddim[25] and dpm[100] < 0.1 * dpm[25]
    # Any diffusers scheduler by class name runs on the same schedule.
    assert run(DiffusersSampler(steps=25, scheduler="UniPCMultistepScheduler"), objective)[1] < ddim[25]


def test_ancestral_ddpm_reproduces_the_data_distribution():
    x, _, guided, _ = run(DDPMSampler(steps=250), DDPMObjective(), n=2000)
    assert abs(x.mean().item() - MU) < 0.01 and abs(x.std().item() - TAU) < 0.01
    assert guided.nfe == 250


@pytest.mark.parametrize(
    "path,prediction",
    [
        ("linear", "velocity"),
        ("gvp", "velocity"),
        ("vp", "velocity"),
        ("linear", "noise"),
        ("gvp", "score"),
    ],
)
def test_flow_ode_samplers_converge_at_their_order(path, prediction):
    objective = FlowObjective(path=path, prediction=prediction)
    euler = {n: run(EulerSampler(steps=n), objective)[1] for n in (10, 40)}
    heun = {n: run(HeunSampler(steps=n, correct_last_step=True), objective)[1] for n in (10, 40)}
    assert 2.5 < euler[10] / euler[40] < 6  # first order: 4x the steps, ~4x less error
    # 2nd order: far below Euler at the same step count (the ε-truncated interval floors noise/score at ~1e-3).
    assert heun[40] < 0.3 * euler[40] and heun[40] < 0.3 * heun[10]
    assert heun[40] < 0.02


def test_dpm_solver_uses_the_objectives_schedule_and_integer_timesteps():
    objective = DDPMObjective(schedule="cosine", num_timesteps=500)
    scheduler = DPMSolverSampler(steps=10).build(objective)
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), objective.diffusion.alphas_cumprod, rtol=2e-5)
    _, _, guided, net = run(DPMSolverSampler(steps=10), objective, channels=4)  # 4 channels, learned Σ: no crash
    seen = torch.stack([t[0] for t in net.timesteps])
    assert seen.dtype == torch.long and seen.tolist() == scheduler.timesteps.tolist()
    assert seen[0] == 499 and guided.nfe == 10


def test_karras_sigmas_on_a_cosine_schedule_step_through_repeated_timesteps():
    """The default sampler (DPM-Solver++ with Karras sigmas) on a cosine-trained model: the top noise
    levels round to training step 999 three times; each is still one step (no IndexError), in order."""
    objective = DDPMObjective(schedule="cosine", num_timesteps=1000)
    sampler = DPMSolverSampler(steps=10, options={"use_karras_sigmas": True})
    timesteps = sampler.build(objective).timesteps.tolist()
    assert timesteps[:3] == [999, 999, 999] and len(timesteps) == 10  # the case that crashed
    x, err, guided, net = run(sampler, objective)
    assert torch.isfinite(x).all() and guided.nfe == 10
    assert [int(t[0]) for t in net.timesteps] == timesteps


class CountingNet(nn.Module):
    def forward(self, x, t, y):
        return torch.zeros_like(x).repeat(1, 2, 1, 1)[:, : self.out_channels]


@pytest.mark.parametrize(
    "sampler,objective,calls",
    [
        (DDPMSampler(steps=7), DDPMObjective(), 7),
        (DDIMSampler(steps=7), DDPMObjective(), 7),
        (DPMSolverSampler(steps=7), DDPMObjective(), 7),
        (EulerSampler(steps=7), FlowObjective(), 7),
        (HeunSampler(steps=7), FlowObjective(), 13),
    ],
)
def test_nfe_counts_cfg_doubling(sampler, objective, calls):
    net = CountingNet()
    net.out_channels = objective.out_channels(1)
    for scale, per_call in ((1.0, 1), (4.0, 2)):
        guided = GuidedModel(net, pred_channels=1, null_label=10, scale=scale)
        sampler.sample(
            guided,
            objective,
            torch.randn(3, 1, 2, 2),
            torch.zeros(3, dtype=torch.long),
            torch.Generator().manual_seed(0),
        )
        assert guided.nfe == per_call * calls == per_call * sampler.describe()["model_calls"]


def test_guidance_interval_for_flow_uses_noise_level_one_minus_t():
    # Euler on 4 steps evaluates t = 0, .25, .5, .75 -> noise levels 1, .75, .5, .25.
    net = CountingNet()
    net.out_channels = 1
    guided = GuidedModel(net, pred_channels=1, null_label=10, scale=4.0, interval=[0.5, 1.0])
    EulerSampler(steps=4).sample(
        guided, FlowObjective(), torch.randn(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), None
    )
    assert guided.nfe == 3 * 2 + 1


@pytest.mark.parametrize(
    "sampler,objective,message",
    [
        (
            DDPMSampler(steps=4),
            FlowObjective(),
            r"sampler 'ddpm' cannot sample a model trained with the 'flow' objective.*euler\|heun",
        ),
        (DPMSolverSampler(steps=4), FlowObjective(), "sampler 'dpm_solver' cannot sample .* 'flow'"),
        (
            EulerSampler(steps=4),
            DDPMObjective(),
            r"sampler 'euler' cannot sample a model trained with the 'ddpm' objective.*ddim\|ddpm",
        ),
        (HeunSampler(steps=4), DDPMObjective(), "sampler 'heun' cannot sample"),
    ],
)
def test_family_mismatch_is_refused(sampler, objective, message):
    with pytest.raises(DitlabError, match=message):
        sampler.check(objective)


@pytest.mark.parametrize("sampler", [DDPMSampler(steps=1001), DDIMSampler(steps=1001), DPMSolverSampler(steps=1001)])
def test_more_steps_than_training_steps_is_refused(sampler):
    with pytest.raises(DitlabError, match=r"sampler.steps=1001 exceeds the 1000 steps.*sampler.steps <= 1000"):
        run(sampler, DDPMObjective(), n=1)


def test_bad_sampler_names_and_options():
    with pytest.raises(DitlabError, match="unknown sampler 'nope'; registered: .*dpm_solver.*euler.*heun"):
        SAMPLERS.get("nope")
    with pytest.raises(DitlabError, match="sampler.scheduler 'Nope' is not a diffusers scheduler"):
        DiffusersSampler(scheduler="Nope").build(DDPMObjective())
    with pytest.raises(DitlabError, match="bad sampler.options for DPMSolverMultistepScheduler"):
        DPMSolverSampler(options={"no_such_option": 1}).build(DDPMObjective())
    with pytest.raises(DitlabError, match="sampler.steps must be positive"):
        EulerSampler(steps=0)
