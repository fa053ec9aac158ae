"""Objective options: self-consistent targets and reconstructions, and a few training steps for each."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import compose_train

from ditlab.build import build_objective, build_sampler
from ditlab.errors import DitlabError
from ditlab.objectives.ddpm import DDPMObjective
from ditlab.objectives.flow import FlowObjective
from ditlab.training.train import train


def test_cosine_schedule_matches_the_formula_and_diffusers():
    from diffusers import DDPMScheduler

    d = DDPMObjective(schedule="cosine").diffusion
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    uncapped = d.betas < 0.999
    expected = np.array([f((i + 1) / 1000) / f(0) for i in range(1000)])
    np.testing.assert_allclose(d.alphas_cumprod[uncapped], expected[uncapped], rtol=1e-9)
    assert d.betas.max() == 0.999 and np.all(np.diff(d.alphas_cumprod) < 0)
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").betas.numpy()
    np.testing.assert_allclose(d.betas, theirs, rtol=1e-6)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_prediction_targets_reconstruct_x0_and_eps(schedule, prediction):
    objective = DDPMObjective(schedule=schedule, prediction=prediction, var_type="fixed_small")
    d = objective.diffusion
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 4, 4, generator=gen), torch.randn(4, 3, 4, 4, generator=gen)
    t = torch.tensor([0, 10, 500, 990])
    x_t = d.q_sample(x0, t, noise)
    target = d.target(x0, t, noise)
    out = d.p_mean_variance(target, x_t, t)  # a perfect network outputs the target
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=1e-4, atol=2e-4)
    torch.testing.assert_close(out["eps"][1:], noise[1:], rtol=1e-3, atol=2e-3)  # t=0: ε barely observable
    assert objective.out_channels(3) == 3
    # The posterior mean from a perfect x̂0 equals the true posterior mean.
    true_mean, _, _ = d.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(out["mean"], true_mean, rtol=1e-4, atol=2e-4)
    terms = d.training_losses(target, x0, x_t, t, noise)
    assert set(terms) == {"mse", "loss"} and terms["loss"].abs().max() < 1e-12


def test_variance_types():
    d = DDPMObjective().diffusion.respace("50")
    x, t = torch.zeros(2, 1, 1, 1), torch.tensor([1, 30])
    log_small = torch.from_numpy(d.posterior_log_variance_clipped[[1, 30]]).float().view(2, 1, 1, 1)
    log_large = torch.from_numpy(np.log(d.betas[[1, 30]])).float().view(2, 1, 1, 1)
    for v, expected in ((-1.0, log_small), (1.0, log_large)):  # learned range: v=-1 -> β̃, v=+1 -> β
        out = torch.cat([x, torch.full_like(x, v)], dim=1)
        torch.testing.assert_close(d.p_mean_variance(out, x, t)["log_variance"], expected)
    for var_type, expected in (("fixed_small", log_small), ("fixed_large", log_large)):
        fixed = DDPMObjective(var_type=var_type).diffusion.respace("50")
        torch.testing.assert_close(fixed.p_mean_variance(x, x, t)["log_variance"], expected)
        assert DDPMObjective(var_type=var_type).out_channels(4) == 4
    assert DDPMObjective().out_channels(4) == 8


def test_flow_predicts_c_channels_and_checks_the_model_output():
    objective = FlowObjective()
    assert objective.out_channels(4) == 4 and objective.describe()["family"] == "flow"
    with pytest.raises(DitlabError, match="needs 1 output channels, the model gave 2"):
        objective.loss(lambda x, t: torch.cat([x, x], 1), torch.zeros(2, 1, 2, 2), {})


def test_logit_normal_time_sampling_concentrates_mid_range():
    torch.manual_seed(0)
    uniform = FlowObjective().sample_t(20_000)
    logit = FlowObjective(time_sampling="logit_normal").sample_t(20_000)
    in_mid = lambda t: ((t > 0.25) & (t < 0.75)).float().mean().item()  # noqa: E731
    assert abs(in_mid(uniform) - 0.5) < 0.02 and in_mid(logit) > 0.65
    assert abs(logit.mean().item() - 0.5) < 0.01


@pytest.mark.parametrize(
    "override,message",
    [
        ("objective.path=nope", "unknown flow path 'nope'; registered: gvp, linear, vp. .* objective.path.module$"),
        ("objective.prediction=eps", "unknown flow prediction 'eps'"),
        ("objective.time_sampling=beta", "unknown time sampling 'beta'"),
    ],
)
def test_bad_flow_options_are_one_line(override, message):
    with pytest.raises(DitlabError, match=message):
        build_objective(compose_train("objective=flow", override).objective)


def test_flow_objective_picks_a_flow_sampler_by_default():
    cfg = compose_train("objective=flow")
    assert cfg.sampler.name == "euler"
    build_sampler(cfg.sampler).check(build_objective(cfg.objective))
    assert compose_train("objective=flow", "sampler=heun").sampler.name == "heun"
    default = compose_train().sampler  # the ddpm objective's default: DPM-Solver++ on Karras sigmas
    assert default.name == "dpm_solver" and default.options.use_karras_sigmas


@pytest.mark.parametrize(
    "overrides",
    [
        ("objective.schedule=cosine",),
        ("objective.var_type=fixed_small", "objective.prediction=x0"),
        ("objective.var_type=fixed_large", "objective.prediction=v", "sampler=dpm_solver"),
        ("objective=flow", "objective.path=gvp", "objective.time_sampling=logit_normal"),
        ("objective=flow", "objective.prediction=noise", "sampler=heun", "sampler.steps=2"),
    ],
)
def test_a_few_training_steps_with_each_option(train_cfg, tmp_path, overrides):
    summary = train(train_cfg(*overrides, "trainer.max_steps=3"))
    assert np.isfinite(summary["final_loss"]) and summary["steps"] == 3
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["objective"]["name"] in ("ddpm", "flow")
    assert on_disk["sampling"]["nfe"] == 2 * on_disk["sampling"]["model_calls"]  # CFG on by default
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ditlab"]["objective"] == on_disk["objective"]
